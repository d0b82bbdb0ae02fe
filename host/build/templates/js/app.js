// {{name}}: keeps a service running.
//
// Woken every five minutes and on demand, it looks at the service its
// `service` setting names and starts it when it is not running. In dry-run
// and approve modes the start is only planned; the agent records the plan
// for a person. Settings: `service` (required), `timeout_ms` (default 30000).
//
// What it writes with console.log and console.error reaches the agent's
// log. End a run with an error by throwing a string: an Error object
// thrown out of handle() loses its message on the way (StarlingMonkey),
// so handle() turns every error into its text.
import { log } from 'medic:plugin/log@0.4.0';
import { get as setting } from 'medic:plugin/config@0.4.0';
import { query, start } from 'medic:plugin/services@0.4.0';

/** A text setting, or undefined when unset. */
function text(key) {
  const value = setting(key);
  if (value === undefined) return undefined;
  return value.tag === 'text' ? value.val : String(value.val);
}

/** A host error ({payload: {kind, message}}) or any other as text. */
function describe(error) {
  const detail = error && error.payload;
  if (detail && detail.kind) return `${detail.kind}: ${detail.message}`;
  return error instanceof Error ? error.message : String(error);
}

function keepRunning() {
  const service = text('service');
  if (!service) throw "set `service` in the plugin's settings";
  const timeoutMs = Number(text('timeout_ms') ?? 30000);
  console.log(`checking ${service}`);
  const status = query(service);
  if (status.state === 'running') {
    return { status: 'healthy', summary: `${service} is running`, actions: [], followUp: undefined };
  }
  const change = start(service, timeoutMs);
  log('info', `${service} was ${status.state}`);
  return {
    status: change.applied ? 'remediated' : 'needs-approval',
    summary: `${service} was ${status.state}; started`,
    actions: [{
      verb: 'start-service', target: service,
      detail: `${status.state} -> ${change.after.state}`, applied: change.applied,
    }],
    followUp: undefined,
  };
}

export const plugin = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: 'Keeps a service running.',
      capabilities: [{ tag: 'services-read' }, { tag: 'services-control' }],
      triggers: [{ tag: 'every', val: 300 }, { tag: 'manual' }],
    };
  },
  handle(event) {
    try {
      return keepRunning(event);
    } catch (error) {
      throw describe(error);
    }
  },
};
