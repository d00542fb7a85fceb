"""Load-test driven tuning: PressureTester, ThroughputRecorder, strategies, Dispatcher."""
