// Fake `medic:plugin/services`: tests replace impl's functions; a call a
// test did not fake fails loudly.
const unfaked = (name) => () => { throw new Error(`services.${name} is not faked in this test`); };
export const impl = {
  query: unfaked('query'), start: unfaked('start'), stop: unfaked('stop'),
  restart: unfaked('restart'), setStartup: unfaked('setStartup'),
};
export const query = (...args) => impl.query(...args);
export const start = (...args) => impl.start(...args);
export const stop = (...args) => impl.stop(...args);
export const restart = (...args) => impl.restart(...args);
export const setStartup = (...args) => impl.setStartup(...args);
// What the real bindings throw for a host error.
export const hostError = (kind, message) =>
  Object.assign(new Error(`${kind}: ${message}`), { payload: { kind, message } });
