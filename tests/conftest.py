"""Settings for every test tier."""

from hypothesis import HealthCheck, settings

# Tests never assert timings: the unit and agent tiers run alongside the integration
# tier (make test), where a property's example can take longer than hypothesis's
# default 200 ms deadline without anything being wrong.
settings.register_profile("churnwatch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("churnwatch")
