// Fake `medic:plugin/config`: tests set values in `settings`.
export const settings = new Map();
export const get = (key) => settings.get(key);
export const all = () => [...settings.entries()];
