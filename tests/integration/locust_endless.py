"""A locustfile whose load shape never ends (the hard time limit test runs it): one idle user,
no request sent. Runs only inside a Locust process started by the tester."""

from __future__ import annotations

from locust import LoadTestShape, User, constant, task


class Idle(User):
    wait_time = constant(1)

    @task
    def nothing(self) -> None:
        return None


class Forever(LoadTestShape):
    def tick(self) -> tuple[int, float]:
        return 1, 1.0
