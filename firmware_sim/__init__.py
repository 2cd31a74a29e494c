"""Simulated device firmware and sensors: realistic signals, labelled faults, many devices."""
