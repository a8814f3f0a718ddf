"""The runner spec of a warm pool, read from the ``runs-on`` label its config names.

Every backend's pool provider builds its pool runners from this spec, so a pool whose
label is missing, invalid or names another pool is refused with the same reason
everywhere.
"""

from __future__ import annotations

import attrs

from runs_fleet_core.domain.labels import LabelDefaults, parse_runs_on
from runs_fleet_core.domain.pool import PoolConfig
from runs_fleet_core.domain.spec import RunnerSpec
from runs_fleet_core.errors import LabelError, ProviderError


def pool_spec(pool: PoolConfig, defaults: LabelDefaults) -> RunnerSpec:
    """The spec ``pool``'s runners are built from: its label, in the pool.

    A missing or invalid label, or one naming another pool, raises ``ProviderError``
    (not retryable): reconciling that pool fails with the reason until its
    configuration is fixed, and the other pools go on.
    """
    where = f"pool {pool.name}"
    try:
        spec = parse_runs_on(pool.label, defaults=defaults)
    except LabelError as exc:
        raise ProviderError(f"{where}: its label is invalid: {exc}", retryable=False) from exc
    if spec is None:
        raise ProviderError(
            f"{where}: its label '{pool.label}' is not a runs-fleet label; set it to the "
            f"runs-on label its runners serve, for example runs-fleet=pool/cpu=4/pool={pool.name}",
            retryable=False,
        )
    if spec.pool is not None and spec.pool != pool.name:
        raise ProviderError(
            f"{where}: its label '{pool.label}' names pool {spec.pool}; drop pool= from "
            f"it or write pool={pool.name}",
            retryable=False,
        )
    return attrs.evolve(spec, pool=pool.name)
