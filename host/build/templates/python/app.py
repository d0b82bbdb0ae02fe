"""{{name}}: keeps a service running.

Woken every five minutes and on demand, it looks at the service its
`service` setting names and starts it when it is not running. In dry-run
and approve modes the start is only planned; the agent records the plan for
a person. Settings: `service` (required), `timeout_ms` (default 30000).

Whatever it prints reaches the agent's log and the run's record; an
uncaught exception ends the run with the exception's message.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log, services, types


def setting(key: str) -> str | None:
    """A text setting, or None when unset."""
    value = config.get(key)
    if isinstance(value, config.Value_Text):
        return value.value
    if isinstance(value, config.Value_Integer):
        return str(value.value)
    return None


def host_error(call: str, error: Err) -> Err:
    """A host error (`Err(types.Error)`) as the run's error text."""
    detail: types.Error = error.value
    return Err(f"{call}: {detail.kind.name.lower().replace('_', '-')}: {detail.message}")


class Plugin(exports.Plugin):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(
            name="{{name}}",
            version="0.1.0",
            description="Keeps a service running.",
            capabilities=[types.Capability_ServicesRead(), types.Capability_ServicesControl()],
            triggers=[types.TriggerHint_Every(300), types.TriggerHint_Manual()],
        )

    def handle(self, event: types.Event) -> types.Outcome:
        service = setting("service")
        if not service:
            raise Err("set `service` in the plugin's settings")
        timeout_ms = int(setting("timeout_ms") or 30000)
        print(f"checking {service}")
        try:
            status = services.query(service)
        except Err as e:
            raise host_error(f"query {service}", e)
        if status.state == services.ServiceState.RUNNING:
            return types.Outcome(types.Status.HEALTHY, f"{service} is running", [], None)
        was = status.state.name.lower().replace("_", "-")
        try:
            change = services.start(service, timeout_ms)
        except Err as e:
            raise host_error(f"start {service}", e)
        log.log(log.Level.INFO, f"{service} was {was}")
        action = types.Action("start-service", service, f"{was} -> {change.after.state.name.lower()}", change.applied)
        status = types.Status.REMEDIATED if change.applied else types.Status.NEEDS_APPROVAL
        return types.Outcome(status, f"{service} was {was}; started", [action], None)
