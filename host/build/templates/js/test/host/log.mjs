// Fake `medic:plugin/log`: what the plugin logged, as [level, message].
export const lines = [];
export const log = (level, message) => { lines.push([level, message]); };
export const panicked = (message) => { lines.push(['panic', message]); };
