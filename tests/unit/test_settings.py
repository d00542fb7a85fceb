"""CenterSettings: defaults, sources and their precedence, URL rules, config file errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from eventcenter.center import settings as settings_module
from eventcenter.center.settings import CenterSettings, HttpSettings, RecordingSettings
from eventcenter.domain.errors import ConfigurationError
from eventcenter.domain.event import EnvelopeLimits
from eventcenter.handlers.config import ProcessorSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No EVENTCENTER_* variable from the caller's shell, and an empty working directory."""
    for key in list(os.environ):
        if key.startswith("EVENTCENTER_"):
            monkeypatch.delenv(key)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir.resolve()


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class TestDefaults:
    def test_defaults_work_on_a_laptop(self, clean_environment: Path) -> None:
        settings = CenterSettings.load()

        assert settings.name == "default"
        assert settings.data_dir == clean_environment / "data"
        assert settings.database_url is None
        assert settings.processor == ProcessorSettings()
        assert settings.recording == RecordingSettings()
        assert (settings.http.enabled, settings.http.host, settings.http.port) == (
            True,
            "127.0.0.1",
            8080,
        )
        assert settings.recording.batch_max == 500
        assert settings.recording.snapshot_interval == 100
        assert settings.recording.cache_size == 1000

    def test_default_database_is_sqlite_under_data_dir(self, tmp_path: Path) -> None:
        settings = CenterSettings(data_dir=tmp_path / "store")

        assert settings.effective_url == f"sqlite:///{tmp_path.resolve()}/store/center.db"
        assert Path(settings.effective_url.removeprefix("sqlite:///")).is_absolute()

    def test_relative_data_dir_is_made_absolute(self, clean_environment: Path) -> None:
        settings = CenterSettings(data_dir=Path("var/center"))

        assert settings.data_dir == clean_environment / "var" / "center"
        assert settings.effective_url == f"sqlite:///{clean_environment}/var/center/center.db"

    def test_data_dir_is_created_only_on_request(self, tmp_path: Path) -> None:
        settings = CenterSettings(data_dir=tmp_path / "a" / "b")
        assert not (tmp_path / "a").exists()

        assert settings.ensure_data_dir() == tmp_path.resolve() / "a" / "b"
        assert (tmp_path / "a" / "b").is_dir()
        settings.ensure_data_dir()  # a second call is harmless

    def test_explicit_database_url_wins_over_data_dir(self, tmp_path: Path) -> None:
        settings = CenterSettings(database_url="sqlite:////srv/center.db", data_dir=tmp_path)

        assert settings.effective_url == "sqlite:////srv/center.db"

    def test_settings_are_frozen(self) -> None:
        settings = CenterSettings()

        with pytest.raises(ValidationError, match="frozen"):
            settings.name = "other"  # type: ignore[misc]


class TestEnvironment:
    def test_environment_sets_top_level_fields(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("EVENTCENTER_NAME", "orders")
        monkeypatch.setenv("EVENTCENTER_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("EVENTCENTER_DATABASE_URL", "postgresql://pg@db:5432/center")

        settings = CenterSettings.load()

        assert settings.name == "orders"
        assert settings.data_dir == tmp_path.resolve()
        assert settings.effective_url == "postgresql+psycopg2://pg@db:5432/center"

    def test_nested_fields_use_double_underscore(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("EVENTCENTER_PROCESSOR__WORKERS", "8")
        monkeypatch.setenv("EVENTCENTER_PROCESSOR__LIMITS__MAX_DEPTH", "4")
        monkeypatch.setenv("EVENTCENTER_RECORDING__BATCH_MAX", "50")

        settings = CenterSettings.load()

        assert settings.processor.workers == 8
        assert settings.processor.limits.max_depth == 4
        assert settings.processor.max_queued == ProcessorSettings().max_queued
        assert settings.recording.batch_max == 50

    def test_plain_construction_reads_the_environment_too(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("EVENTCENTER_PROCESSOR__WORKERS", "3")

        assert CenterSettings().processor.workers == 3

    def test_invalid_environment_value_names_the_field(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("EVENTCENTER_PROCESSOR__WORKERS", "many")

        with pytest.raises(ValidationError, match=r"processor\.workers"):
            CenterSettings.load()


TOML = """\
name = "from-toml"
data_dir = "toml-data"

[processor]
workers = 4
max_queued = 200

[processor.limits]
max_depth = 8

[recording]
batch_max = 20
snapshot_interval = 10
cache_size = 0
"""


class TestTomlFile:
    def test_file_given_as_argument(self, tmp_path: Path, clean_environment: Path) -> None:
        config = write_toml(tmp_path / "center.toml", TOML)

        settings = CenterSettings.load(config)

        assert settings.name == "from-toml"
        assert settings.data_dir == clean_environment / "toml-data"
        assert settings.processor.workers == 4
        assert settings.processor.max_queued == 200
        assert settings.processor.limits.max_depth == 8
        assert settings.recording == RecordingSettings(
            batch_max=20, snapshot_interval=10, cache_size=0
        )

    def test_file_named_by_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = write_toml(tmp_path / "center.toml", TOML)
        monkeypatch.setenv("EVENTCENTER_CONFIG", str(config))

        assert CenterSettings.load().name == "from-toml"

    def test_argument_wins_over_environment_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(
            "EVENTCENTER_CONFIG", str(write_toml(tmp_path / "env.toml", 'name = "env-file"\n'))
        )
        config = write_toml(tmp_path / "arg.toml", 'name = "arg-file"\n')

        assert CenterSettings.load(config).name == "arg-file"

    def test_default_file_in_working_directory(self, clean_environment: Path) -> None:
        write_toml(clean_environment / "eventcenter.toml", 'name = "cwd-file"\n')

        assert CenterSettings.load().name == "cwd-file"

    def test_no_default_file_means_defaults(self) -> None:
        assert CenterSettings.load().name == "default"

    def test_plain_construction_ignores_toml(self, clean_environment: Path) -> None:
        write_toml(clean_environment / "eventcenter.toml", 'name = "cwd-file"\n')

        assert CenterSettings().name == "default"

    def test_unknown_key_is_an_error(self, tmp_path: Path) -> None:
        config = write_toml(tmp_path / "center.toml", "[processor]\nworkerz = 4\n")

        with pytest.raises(ValidationError, match=r"processor\.workerz"):
            CenterSettings.load(config)

    def test_invalid_value_names_the_field(self, tmp_path: Path) -> None:
        config = write_toml(tmp_path / "center.toml", "[recording]\nsnapshot_interval = 1\n")

        with pytest.raises(ValidationError, match=r"recording\.snapshot_interval"):
            CenterSettings.load(config)

    def test_healing_strategy_limits_are_read_and_an_unknown_strategy_is_named(
        self, tmp_path: Path
    ) -> None:
        config = write_toml(
            tmp_path / "center.toml",
            '[healing.strategies]\nreconnect = { max_attempts = 4, cooldown = "2m" }\n'
            "force_polling = { cooldown = 0 }\n",
        )
        limits = CenterSettings.load(config).healing.strategies
        assert limits["reconnect"].overrides() == {"max_attempts": 4, "cooldown": 120.0}
        assert limits["force_polling"].overrides() == {"cooldown": 0.0}

        typo = write_toml(tmp_path / "typo.toml", "[healing.strategies]\nreconect = {}\n")
        with pytest.raises(ValidationError, match="unknown strategy reconect: the built-in"):
            CenterSettings.load(typo)
        zero = write_toml(
            tmp_path / "zero.toml", "[healing.strategies]\nreconnect = { max_attempts = 0 }\n"
        )
        with pytest.raises(ValidationError, match=r"reconnect\.max_attempts"):
            CenterSettings.load(zero)

    def test_malformed_file_names_the_path(self, tmp_path: Path) -> None:
        config = write_toml(tmp_path / "center.toml", "name = \n")

        with pytest.raises(ConfigurationError, match="not valid TOML") as caught:
            CenterSettings.load(config)
        assert str(config) in str(caught.value)


class TestDocumentedExample:
    def test_example_file_lists_every_field_with_its_default(self, tmp_path: Path) -> None:
        """The docstring's example (copied into the README) stays complete and true."""
        doc = settings_module.__doc__ or ""
        example = doc.split("A complete ``eventcenter.toml`` (every key, with its default)::", 1)[1]
        lines = [line.removeprefix("    ") for line in example.splitlines()]
        config = write_toml(tmp_path / "example.toml", "\n".join(lines))

        loaded = CenterSettings.load(config)

        assert loaded == CenterSettings()
        documented = config.read_text(encoding="utf-8")
        for field in CenterSettings.model_fields:
            assert field in documented
        assert "[processor.limits]" in documented
        assert "[http]" in documented
        nested = (
            *ProcessorSettings.model_fields,
            *RecordingSettings.model_fields,
            *HttpSettings.model_fields,
        )
        for field in (*nested, *EnvelopeLimits.model_fields):
            assert f"{field} = " in documented or field == "limits"


class TestHttp:
    def test_the_http_section_is_read_from_the_file_and_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = write_toml(
            tmp_path / "center.toml", '[http]\nhost = "0.0.0.0"\nport = 9000\nenabled = false\n'
        )
        monkeypatch.setenv("EVENTCENTER_HTTP__PORT", "9100")

        settings = CenterSettings.load(config)

        assert settings.http == HttpSettings(host="0.0.0.0", port=9100, enabled=False)

    @pytest.mark.parametrize("port", [-1, 65536])
    def test_a_port_out_of_range_is_refused_naming_the_field(self, port: int) -> None:
        with pytest.raises(ValidationError, match=r"http\.port"):
            CenterSettings(http={"port": port})


class TestPrecedence:
    def test_arguments_then_environment_then_file_then_defaults(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = write_toml(
            tmp_path / "center.toml",
            'name = "from-toml"\ndatabase_url = "sqlite:////toml.db"\n'
            "[processor]\nworkers = 4\nmax_queued = 200\nmax_attempts = 2\n",
        )
        monkeypatch.setenv("EVENTCENTER_NAME", "from-env")
        monkeypatch.setenv("EVENTCENTER_DATABASE_URL", "sqlite:////env.db")
        monkeypatch.setenv("EVENTCENTER_PROCESSOR__WORKERS", "8")
        monkeypatch.setenv("EVENTCENTER_PROCESSOR__MAX_QUEUED", "300")

        settings = CenterSettings.load(config, name="from-init", processor={"workers": 16})

        assert settings.name == "from-init"  # init > env > toml
        assert settings.database_url == "sqlite:////env.db"  # env > toml
        assert settings.processor.workers == 16  # init > env > toml, nested
        assert settings.processor.max_queued == 300  # env > toml, nested
        assert settings.processor.max_attempts == 2  # toml > default, nested
        assert settings.processor.backoff_max == ProcessorSettings().backoff_max  # default


class TestDatabaseUrl:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("postgresql://pg@127.0.0.1:5432/db", "postgresql+psycopg2://pg@127.0.0.1:5432/db"),
            ("postgresql+psycopg2://pg@h/db", "postgresql+psycopg2://pg@h/db"),
            ("sqlite:////var/lib/center.db", "sqlite:////var/lib/center.db"),
            ("sqlite:///relative.db", "sqlite:///relative.db"),
        ],
    )
    def test_accepted_urls(self, given: str, expected: str) -> None:
        settings = CenterSettings(database_url=given)

        assert settings.database_url == expected
        assert settings.effective_url == expected

    @pytest.mark.parametrize(
        "url",
        [
            "mysql://root@localhost/db",
            "postgresql+asyncpg://pg@h/db",
            "sqlite://",
            "/var/lib/center.db",
            "",
        ],
    )
    def test_other_schemes_are_rejected_naming_field_and_schemes(self, url: str) -> None:
        with pytest.raises(ValidationError) as caught:
            CenterSettings(database_url=url)

        message = str(caught.value)
        assert "database_url" in message
        assert "sqlite:///" in message
        assert "postgresql+psycopg2://" in message


class TestName:
    @pytest.mark.parametrize("name", ["a", "orders-eu_1", "x" * 24])
    def test_short_names_are_accepted(self, name: str) -> None:
        assert CenterSettings(name=name).name == name

    @pytest.mark.parametrize("name", ["", "Orders", "has space", "x" * 25, "dots.not.ok"])
    def test_other_names_are_rejected(self, name: str) -> None:
        with pytest.raises(ValidationError, match="name"):
            CenterSettings(name=name)


class TestMissingConfigFile:
    def test_missing_argument_file_names_the_path(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.toml"

        with pytest.raises(ConfigurationError, match=str(missing)):
            CenterSettings.load(missing)

    def test_missing_environment_file_names_the_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        missing = tmp_path / "nope.toml"
        monkeypatch.setenv("EVENTCENTER_CONFIG", str(missing))

        with pytest.raises(ConfigurationError, match=str(missing)):
            CenterSettings.load()

    def test_directory_is_not_a_config_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="not a file"):
            CenterSettings.load(tmp_path)


def test_ensure_data_dir_creates_the_directory_of_an_sqlite_file_url(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "deeper" / "center.db"
    settings = CenterSettings(database_url=f"sqlite:///{target}", data_dir=tmp_path / "data")
    settings.ensure_data_dir()
    assert target.parent.is_dir()
    assert (tmp_path / "data").is_dir()
