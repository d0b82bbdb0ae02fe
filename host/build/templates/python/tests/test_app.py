"""The plugin's logic, natively, against fake host functions: a host
function a test does not replace raises NotImplementedError."""

import pytest
from componentize_py_types import Err
from wit_world.imports import config, services, types

import app


def event():
    return types.Event(id="e1", kind=types.EventKind.MANUAL, source="test", time_ms=0, subject="", fields=[])


def status(name, state):
    return services.ServiceStatus(name=name, display_name=name, state=state,
                                  startup=services.StartupType.AUTOMATIC, problem=None)


@pytest.fixture
def host(monkeypatch):
    """A host with the `service` setting and a stopped cron; `started`
    lists the services started, `applied` says whether starts apply."""
    fake = type("Host", (), {"started": [], "applied": True, "state": services.ServiceState.STOPPED})()
    settings = {"service": config.Value_Text("cron")}
    monkeypatch.setattr(config, "get", lambda key: settings.get(key))
    monkeypatch.setattr(services, "query", lambda name: status(name, fake.state))

    def start(name, timeout_ms):
        fake.started.append(name)
        after = services.ServiceState.RUNNING if fake.applied else fake.state
        return services.ServiceChange(before=status(name, fake.state), after=status(name, after), applied=fake.applied)

    monkeypatch.setattr(services, "start", start)
    monkeypatch.setattr("wit_world.imports.log.log", lambda level, message: None)
    fake.settings = settings
    return fake


def test_a_running_service_is_left_alone(host):
    host.state = services.ServiceState.RUNNING
    outcome = app.Plugin().handle(event())
    assert outcome.status == types.Status.HEALTHY
    assert host.started == []


def test_a_stopped_service_is_started(host):
    outcome = app.Plugin().handle(event())
    assert outcome.status == types.Status.REMEDIATED
    assert host.started == ["cron"]
    assert outcome.actions[0].applied


def test_in_dry_run_the_start_is_only_planned(host):
    host.applied = False
    outcome = app.Plugin().handle(event())
    assert outcome.status == types.Status.NEEDS_APPROVAL
    assert not outcome.actions[0].applied


def test_without_its_setting_it_says_what_is_missing(host):
    del host.settings["service"]
    with pytest.raises(Err) as error:
        app.Plugin().handle(event())
    assert "service" in error.value.value
