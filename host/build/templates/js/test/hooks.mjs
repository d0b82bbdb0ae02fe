// Module resolution: medic:<package>/<interface>@<version> -> ./host/<interface>.mjs
export async function resolve(specifier, context, next) {
  const match = /^medic:[a-z-]+\/([a-z-]+)(@.*)?$/.exec(specifier);
  if (match) {
    return { url: new URL(`./host/${match[1]}.mjs`, import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
