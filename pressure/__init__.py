"""Load-test driven tuning: PressureTester, ThroughputRecorder, adjustment strategies, Dispatcher."""
