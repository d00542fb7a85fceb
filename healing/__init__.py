"""Self-healing: the RCA runner, healing strategies and escalation sinks, circuit breakers, the
health monitor and degradation strategies. Imports ``eventcenter.domain`` only; it meets the
other packages through the ports declared there, wired together in ``eventcenter.center``."""
