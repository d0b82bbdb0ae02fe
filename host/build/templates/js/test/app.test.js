// The plugin's logic, natively, against the fakes in test/host/.
import { test, beforeEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { plugin } from '../app.js';
import * as services from './host/services.mjs';
import * as config from './host/config.mjs';
import * as logs from './host/log.mjs';

const event = () => ({ id: 'e1', kind: 'manual', source: 'test', timeMs: 0n, subject: '', fields: [] });
const status = (name, state) => ({ name, displayName: name, state, startup: 'automatic', problem: undefined });

beforeEach(() => {
  mock.restoreAll();
  logs.lines.length = 0;
  config.settings.clear();
  config.settings.set('service', { tag: 'text', val: 'cron' });
  console.log = () => {};
});

test('a running service is left alone', () => {
  mock.method(services.impl, 'query', (name) => status(name, 'running'));
  const start = mock.method(services.impl, 'start', () => assert.fail('started'));
  assert.equal(plugin.handle(event()).status, 'healthy');
  assert.equal(start.mock.callCount(), 0);
});

test('a stopped service is started', () => {
  mock.method(services.impl, 'query', (name) => status(name, 'stopped'));
  const start = mock.method(services.impl, 'start', (name) =>
    ({ before: status(name, 'stopped'), after: status(name, 'running'), applied: true }));
  const outcome = plugin.handle(event());
  assert.equal(outcome.status, 'remediated');
  assert.deepEqual(start.mock.calls[0].arguments, ['cron', 30000]);
});

test('in dry-run the start is only planned', () => {
  mock.method(services.impl, 'query', (name) => status(name, 'stopped'));
  mock.method(services.impl, 'start', (name) =>
    ({ before: status(name, 'stopped'), after: status(name, 'stopped'), applied: false }));
  const outcome = plugin.handle(event());
  assert.equal(outcome.status, 'needs-approval');
  assert.equal(outcome.actions[0].applied, false);
});

test('a host error ends the run with its text', () => {
  mock.method(services.impl, 'query', () => { throw services.hostError('denied', 'not granted'); });
  assert.throws(() => plugin.handle(event()), (error) => error === 'denied: not granted');
});
