"""The aggregation strategies a run can choose: Flower's own and FedGeoMedian, configured from the run settings."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, MultiKrum, Strategy

from cloud_hub.fl.errors import SettingsError
from cloud_hub.fl.geomedian import FedGeoMedian
from cloud_hub.fl.settings import INLIER_RADIUS, RunSettings, StrategyName
from protocol.updates import RecordNames as R

STRATEGIES: tuple[StrategyName, ...] = ("fedavg", "fedgeomedian", "fedmedian", "fedtrimmedavg", "multikrum")


def build_strategy(
    name: StrategyName,
    *,
    min_nodes: int = 2,
    fraction_train: float = 1.0,
    fraction_evaluate: float = 1.0,
    inlier_radius: float = INLIER_RADIUS,
    trim_beta: float = 0.2,
    krum_malicious: int = 1,
    krum_select: int = 2,
) -> Strategy:
    """FedAvg (the default), or one of the robust ones: FedGeoMedian (ours), FedMedian, FedTrimmedAvg, MultiKrum."""
    common = {
        "fraction_train": fraction_train,
        "fraction_evaluate": fraction_evaluate,
        "min_train_nodes": min_nodes,
        "min_evaluate_nodes": min_nodes if fraction_evaluate > 0 else 0,
        "min_available_nodes": min_nodes,
        "weighted_by_key": R.NUM_EXAMPLES,
        "arrayrecord_key": R.ARRAYS,
        "configrecord_key": R.CONFIG,
    }
    if name == "fedavg":
        return FedAvg(**common)  # type: ignore[arg-type]
    if name == "fedgeomedian":
        return FedGeoMedian(**common, inlier_radius=inlier_radius)
    if name == "fedmedian":
        return FedMedian(**common)  # type: ignore[arg-type]
    if name == "fedtrimmedavg":
        return FedTrimmedAvg(**common, beta=trim_beta)  # type: ignore[arg-type]
    if name == "multikrum":
        return MultiKrum(**common, num_malicious_nodes=krum_malicious, num_nodes_to_select=krum_select)  # type: ignore[arg-type]
    raise SettingsError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def strategy_for(settings: RunSettings) -> Strategy:
    return build_strategy(
        settings.strategy,
        min_nodes=settings.min_nodes,
        fraction_train=settings.fraction_train,
        fraction_evaluate=settings.fraction_evaluate,
        inlier_radius=settings.inlier_radius,
        trim_beta=settings.trim_beta,
        krum_malicious=settings.krum_malicious,
        krum_select=settings.krum_select,
    )
