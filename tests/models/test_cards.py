"""What a card records about the machine that built it."""

from __future__ import annotations

from models.cards import cpu_description

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
"""
EPYC = """model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2
"""
ARM = """processor\t: 0
Features\t: fp asimd asimddp
CPU implementer\t: 0x41
"""


def test_the_cpu_is_named_with_the_extensions_that_change_int8_speed() -> None:
    assert cpu_description(XEON) == "Intel(R) Xeon(R) Processor (AVX-512 VNNI, AMX, AVX-512, AVX2)"
    assert cpu_description(EPYC) == "AMD EPYC 7B13 (AVX2)"


def test_a_cpu_without_a_model_name_falls_back_to_the_platform() -> None:
    description = cpu_description(ARM)
    assert description.endswith("(Arm dot product)")
    assert description.split(" (")[0]  # platform.processor() or "cpu", never empty
    assert cpu_description("") != ""
