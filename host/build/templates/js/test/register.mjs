// node --import ./test/register.mjs --test test/app.test.js
// Maps the component's imports (`medic:plugin/services@0.4.0`) to the
// fakes in test/host/.
import { register } from 'node:module';
register('./hooks.mjs', import.meta.url);
