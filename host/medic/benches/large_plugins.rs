//! Large plugins: what loading a Python or JavaScript plugin costs. Their
//! components carry an interpreter (CPython, StarlingMonkey) and weigh
//! 12–18 MB, against tens of KiB for a Rust plugin.
//!
//! One project in each language is made with `medic new` in a temporary
//! folder and built with `medic build` (componentize-py from PyPI,
//! componentize-js from npm); then built again with its version string
//! changed, as a rebuilt plugin is. Without python3 or npm, or when a
//! build fails (no registry), that language is skipped with a `SKIP`
//! line saying why. For each:
//!
//! - the component's size;
//! - cold load with the quick tier, as the agent loads (target, for a
//!   15 MB plugin: <= 3 s): serving from Winch's code, a run on it, and
//!   when Cranelift's code, compiled in the background, takes over;
//! - cold load without it, as one-shot commands load: `Runtime::load_file`
//!   with an empty compile cache, compiling with Cranelift; its CPU time
//!   says how much of it ran in parallel;
//! - the cache entry it leaves;
//! - warm load from the cache (target: <= 50 ms): a fresh `Runtime` on
//!   that cache, median of 5; split into reading and hashing the
//!   component, and mapping, authenticating and deserializing the entry
//!   (the rest is scanning, linking and `describe()`);
//! - loaded again while it is loaded (a second policy entry serving the
//!   same component, or a reload bringing back a version still held):
//!   its compiled code is shared, not read from the cache; median of 5;
//! - a run (a fresh instance and one `handle`, which fails at once for
//!   want of settings), median of 21;
//! - the agent serving it (`medic run`, warm cache): start to ready, and
//!   resident memory two seconds after ready, beside the same agent
//!   serving a 38 KiB Rust plugin;
//! - hot reload, from the file renamed into the plugin folder (or the
//!   policy renamed over) to the `plugin (re)loaded` line: the policy
//!   changed, the component not (its compiled code is reused); the
//!   rebuilt component, never compiled (compiled now); and the two
//!   versions swapped back and forth (both in the cache; median of 3).
//!   The rebuilt component serves from the quick tier.
//!
//! The Rust baseline is `target/plugins/content-acl.wasm` (from `cargo
//! xtask plugins`; skipped without it), loaded the same way; the agent
//! figures for the Rust WSUS pack are in `agent_footprint`.
//!
//! Engine settings, compared in the same run on each component (compile
//! only, `Engine::precompile_component`, and `Component::deserialize` of
//! what it made; the `shipped` variant is `engine::wasmtime_config`):
//! `before` restores wasmtime's defaults for what the engine now turns
//! off (the address map from native code back to wasm offsets, and
//! native `.eh_frame` unwind information, neither used by medic: wasm
//! backtraces come from wasmtime's own frame walking and keep function
//! names); `opt-none` is Cranelift without optimizations (not shipped:
//! it would need a second engine and linker for large plugins, and slows
//! every run); `single-pass` the single-pass register allocator
//! (not shipped: wasmtime calls it not ready for security-sensitive use).
//! `LARGE_PLUGINS_VARIANTS=shipped,before,opt-none,single-pass,serial`
//! chooses (default: `shipped,before,opt-none`); `LARGE_PLUGINS_COMPONENTS=
//! a.wasm,b.wasm` compares the variants on those files alone and stops.
//!
//! Run with `cargo bench -p medic --bench large_plugins`.

#[path = "support/agent.rs"]
mod agent;
mod support;

use agent::Agent;
use medic_backends::{Backends, PrincipalMap};
use medic_sandbox::engine::wasmtime::component::Component;
use medic_sandbox::engine::wasmtime::{Config, Engine, OptLevel, RegallocAlgorithm};
use medic_sandbox::{CacheUse, Limits, LoadedPlugin, Runtime, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const WARM_LOADS: usize = 5;
const RUNS: usize = 21;
const SWAPS: usize = 3;
/// How long a reload that compiles may take before the bench gives up.
const COMPILE_LIMIT: Duration = Duration::from_secs(600);

/// A plugin language `medic new` knows.
struct Lang {
    /// `--lang`, and the key of its figures.
    lang: &'static str,
    /// The plugin's name.
    name: &'static str,
    /// The file holding `describe()`'s version string.
    source: &'static str,
    /// What the build needs on the machine.
    tool: &'static str,
}

const LANGS: [Lang; 2] = [
    Lang {
        lang: "python",
        name: "large-python",
        source: "app.py",
        tool: "python3",
    },
    Lang {
        lang: "js",
        name: "large-js",
        source: "app.js",
        tool: "npm",
    },
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// CPU time this process has used, all threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// This process's resident memory, KiB.
fn rss_kib() -> u64 {
    agent::memory_kib("self", "VmRSS")
}

/// `medic ARGS` in `dir`; its output, or the end of what it said on
/// failure.
fn medic(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_medic"))
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("medic {}: {e}", args.join(" ")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    // The first error or panic it reports, and its last line.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = said.lines().map(str::trim).collect();
    let first = lines
        .iter()
        .position(|l| l.contains("panicked") || l.to_lowercase().starts_with("error"))
        .map_or(String::new(), |i| {
            lines[i..(i + 2).min(lines.len())].join(" ")
        });
    Err(format!(
        "`medic {}` failed: {first} ... {}",
        args.join(" "),
        lines.last().unwrap_or(&"")
    ))
}

/// A plugin built twice: its first version and the rebuilt one.
struct Built {
    first: PathBuf,
    rebuilt: PathBuf,
    build: Duration,
    rebuild: Duration,
}

/// Make the project with `medic new`, build it, change its version string
/// and build it again.
fn build(root: &Path, lang: &Lang) -> Result<Built, String> {
    let has_tool = Command::new(lang.tool)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_tool {
        return Err(format!("{} is not installed", lang.tool));
    }
    let dir = root.join(lang.name);
    let dir_arg = dir.display().to_string();
    medic(
        root,
        &["new", lang.name, "--lang", lang.lang, "--dir", &dir_arg],
    )?;
    let dist = dir.join("dist").join(format!("{}.wasm", lang.name));
    let started = Instant::now();
    medic(&dir, &["build"])?;
    let build = started.elapsed();
    let first = root.join(format!("{}-0.1.0.wasm", lang.name));
    std::fs::copy(&dist, &first).map_err(|e| e.to_string())?;
    let source = dir.join(lang.source);
    let text = std::fs::read_to_string(&source).map_err(|e| e.to_string())?;
    let changed = text.replacen("0.1.0", "0.2.0", 1);
    assert_ne!(text, changed, "no version string in {}", source.display());
    std::fs::write(&source, changed).map_err(|e| e.to_string())?;
    // componentize-py refuses to write the bindings over those of the
    // first build ("File exists"): a Python project is rebuilt without.
    let _ = std::fs::remove_dir_all(dir.join("bindings"));
    let started = Instant::now();
    medic(&dir, &["build"])?;
    let rebuild = started.elapsed();
    let rebuilt = root.join(format!("{}-0.2.0.wasm", lang.name));
    std::fs::copy(&dist, &rebuilt).map_err(|e| e.to_string())?;
    Ok(Built {
        first,
        rebuilt,
        build,
        rebuild,
    })
}

/// What loading one component costs in the library.
struct Loading {
    /// Memory `malloc_trim` gave back after the compile.
    trimmed_kib: u64,
    size: u64,
    cold: Duration,
    cold_cpu: Duration,
    cache_bytes: u64,
    warm: Duration,
    read_hash: Duration,
    lookup: Duration,
    /// Mapping the entry and computing its MAC.
    entry_mac: Duration,
    /// Loading it again while it is loaded.
    shared: Duration,
    run: Duration,
}

/// A run of `plugin` with no grants, median of [`RUNS`].
fn median_run(runtime: &Runtime, plugin: &LoadedPlugin) -> Duration {
    let (grants, backends) = (
        support::grants(&[]),
        Backends::local(PrincipalMap::default()),
    );
    median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                support::run(runtime, plugin, &grants, &backends, Limits::default(), None);
                started.elapsed()
            })
            .collect(),
    )
}

/// The quick tier on an empty cache: how soon a plugin serves (compiled
/// by Winch), a run on that code (median of 21), and how soon Cranelift's
/// code takes over in the background.
struct QuickLoad {
    serving: Duration,
    run: Duration,
    optimized: Duration,
}

fn quick_loading(load: &dyn Fn(&Runtime) -> LoadedPlugin) -> QuickLoad {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        quick_tier: true,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let held = runtime.hold_optimizing();
    let plugin = load(&runtime);
    let serving = started.elapsed();
    assert_eq!(plugin.cache, CacheUse::Quick);
    let run = median_run(&runtime, &plugin);
    assert_eq!(plugin.tier(), medic_sandbox::Tier::Quick);
    let started = Instant::now();
    drop(held);
    assert!(plugin.wait_optimized(Duration::from_secs(600)));
    QuickLoad {
        serving,
        run,
        optimized: serving + started.elapsed(),
    }
}

/// Load `component` (through `load`) with an empty compile cache in
/// `cache`, then from it.
fn loading(component: &Path, cache: &Path, load: &dyn Fn(&Runtime) -> LoadedPlugin) -> Loading {
    let config = RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(&config).unwrap();
    let (cpu, started) = (cpu_time(), Instant::now());
    let plugin = load(&runtime);
    let (cold, cold_cpu) = (started.elapsed(), cpu_time() - cpu);
    assert_eq!(plugin.cache, CacheUse::Compiled);
    let hash = plugin.hash.clone();
    drop((plugin, runtime));
    // What the compile left to the allocator: freed, but kept by glibc's
    // arenas until trimmed.
    let before_trim = rss_kib();
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    let trimmed_kib = before_trim.saturating_sub(rss_kib());
    let entry = std::fs::read_dir(cache)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with(&hash) && name.ends_with(".cwasm")
        })
        .expect("a cache entry");
    let cache_bytes = std::fs::metadata(&entry).unwrap().len();
    let warm = median(
        (0..WARM_LOADS)
            .map(|_| {
                let runtime = Runtime::new(&config).unwrap();
                let started = Instant::now();
                let plugin = load(&runtime);
                let took = started.elapsed();
                assert_eq!(plugin.cache, CacheUse::Hit);
                took
            })
            .collect(),
    );
    let runtime = Runtime::new(&config).unwrap();
    let started = Instant::now();
    let bytes = medic_sandbox::read_component(component).unwrap();
    let hash = medic_sandbox::content_hash(&bytes);
    let read_hash = started.elapsed();
    let lookup = median(
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let compiled = runtime.cache().lookup(runtime.engine(), &hash).unwrap();
                let took = started.elapsed();
                drop(compiled);
                took
            })
            .collect(),
    );
    // The part of a lookup before deserializing: the entry mapped and its
    // MAC computed over the mapping (keyed BLAKE3, as the cache does).
    let file = std::fs::File::open(&entry).unwrap();
    let started = Instant::now();
    // SAFETY: a new private read-only mapping of a file no one changes
    // meanwhile, unmapped below; the slice does not outlive it.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            cache_bytes as usize,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        );
        assert_ne!(at, libc::MAP_FAILED);
        let mapped = std::slice::from_raw_parts(at.cast::<u8>(), cache_bytes as usize);
        std::hint::black_box(blake3::keyed_hash(&[7; 32], mapped));
        libc::munmap(at, cache_bytes as usize);
    }
    let entry_mac = started.elapsed();
    let plugin = load(&runtime);
    // Loaded again while the first is held (a second policy entry, or a
    // version a reload brings back): its compiled code is shared.
    let shared = median(
        (0..WARM_LOADS)
            .map(|_| {
                let started = Instant::now();
                let again = load(&runtime);
                let took = started.elapsed();
                assert_eq!(again.cache, CacheUse::Shared);
                took
            })
            .collect(),
    );
    let run = median_run(&runtime, &plugin);
    Loading {
        trimmed_kib,
        size: plugin.size as u64,
        cold,
        cold_cpu,
        cache_bytes,
        warm,
        read_hash,
        lookup,
        entry_mac,
        shared,
        run,
    }
}

/// An engine setting compared with the shipped ones.
type Variant = (&'static str, fn(&mut Config));

const VARIANTS: &[Variant] = &[
    ("shipped", |_| {}),
    ("before", |c| {
        c.generate_address_map(true);
        c.native_unwind_info(true);
    }),
    ("address-map", |c| {
        c.generate_address_map(true);
    }),
    ("unwind-info", |c| {
        c.native_unwind_info(true);
    }),
    ("opt-none", |c| {
        c.cranelift_opt_level(OptLevel::None);
    }),
    ("single-pass", |c| {
        c.cranelift_regalloc_algorithm(RegallocAlgorithm::SinglePass);
    }),
    ("serial", |c| {
        c.parallel_compilation(false);
    }),
];

/// The variants `LARGE_PLUGINS_VARIANTS` names.
fn chosen_variants() -> Vec<&'static Variant> {
    let chosen = std::env::var("LARGE_PLUGINS_VARIANTS")
        .unwrap_or_else(|_| "shipped,before,opt-none".into());
    chosen
        .split(',')
        .map(|name| {
            VARIANTS
                .iter()
                .find(|(known, _)| *known == name.trim())
                .unwrap_or_else(|| panic!("no engine variant `{name}`"))
        })
        .collect()
}

/// Compile `bytes` under each variant: `key_compile_ms`, `key_cpu_ms`,
/// `key_code_mib` and `key_deserialize_ms` for each, also printed.
fn compare(what: &str, bytes: &[u8]) -> String {
    let mut figures = String::new();
    for (name, tweak) in chosen_variants() {
        let mut config = medic_sandbox::engine::wasmtime_config(&RuntimeConfig::default());
        tweak(&mut config);
        let engine = Engine::new(&config).unwrap();
        let (cpu, started) = (cpu_time(), Instant::now());
        let code = engine.precompile_component(bytes).unwrap();
        let (compile, compile_cpu) = (started.elapsed(), cpu_time() - cpu);
        let deserialize = median(
            (0..3)
                .map(|_| {
                    let started = Instant::now();
                    // SAFETY: made just now by this engine.
                    let component = unsafe { Component::deserialize(&engine, &code) }.unwrap();
                    let took = started.elapsed();
                    drop(component);
                    took
                })
                .collect(),
        );
        println!(
            "{what}, engine `{name}`: compiled in {:.2} s ({:.2} s CPU), {:.1} MiB of code, deserialized in {:.1} ms",
            compile.as_secs_f64(),
            compile_cpu.as_secs_f64(),
            mib(code.len() as u64),
            ms(deserialize)
        );
        let key = name.replace('-', "_");
        figures.push_str(&format!(
            " {key}_compile_ms={:.0} {key}_cpu_ms={:.0} {key}_code_mib={:.2} {key}_deserialize_ms={:.2}",
            ms(compile),
            ms(compile_cpu),
            mib(code.len() as u64),
            ms(deserialize)
        ));
    }
    figures
}

/// Write `bytes` to `path` the way an install does: written in `staging`
/// (a folder the agent does not watch, on the same file system), then
/// renamed over it; returns when it landed.
fn install(staging: &Path, path: &Path, bytes: &[u8]) -> Instant {
    std::fs::create_dir_all(staging).unwrap();
    let partial = staging.join(path.file_name().unwrap());
    std::fs::write(&partial, bytes).unwrap();
    let landed = Instant::now();
    std::fs::rename(&partial, path).unwrap();
    landed
}

/// A policy serving `name` from `served/NAME.wasm`, on demand only,
/// granted and set to look at `service`.
fn policy(name: &str, service: &str, grants: &str) -> String {
    format!(
        r#"[agent]
state_dir = "state"
plugin_dir = "served"

[backend]
kind = "local"

[plugins.{name}]
component = "{name}.wasm"
mode = "dry-run"
grants = {{ {grants} }}
settings = {{ service = "{service}" }}

[[plugins.{name}.triggers]]
kind = "manual"
"#
    )
}

fn service_grants(service: &str) -> String {
    format!("services-read = [\"{service}\"], services-control = [\"{service}\"]")
}

/// A folder for an agent serving `component` as `name`, its compile cache
/// in `state/cache`.
fn agent_dir(root: &Path, name: &str, component: &Path, grants: &str) -> PathBuf {
    let dir = root.join(format!("agent-{name}"));
    std::fs::create_dir_all(dir.join("served")).unwrap();
    std::fs::copy(component, dir.join("served").join(format!("{name}.wasm"))).unwrap();
    std::fs::write(dir.join("policy.toml"), policy(name, "cron", grants)).unwrap();
    dir
}

/// What the agent serving a large plugin costs.
struct Served {
    start: Duration,
    rss_kib: u64,
    same_bytes: Duration,
    compiled: Duration,
    cached: Duration,
    /// After the reload that compiled.
    rss_compiled_kib: u64,
    /// After the reloads from the cache.
    rss_after_kib: u64,
    /// Of that, anonymous memory (the heap, instances' memories).
    rss_after_anon_kib: u64,
    /// Of that, files mapped (the cache entry serving, the binary).
    rss_after_file_kib: u64,
    /// Compiled components mapped in the agent after them.
    code_maps: usize,
}

/// The agent in `dir` serving `name` (its first version in the cache):
/// start, memory, and reloads to `rebuilt` and back.
fn serve(dir: &Path, name: &str, first: &[u8], rebuilt: &[u8]) -> Served {
    let (agent, start) = Agent::start(dir, "policy.toml", dir.join("agent.log"));
    std::thread::sleep(Duration::from_secs(2));
    let rss_kib = agent.rss_kib();
    let reloaded = |texts: &[&str], landed: Instant, limit: Duration, seen: usize| {
        agent.wait_for_lines(texts, seen + 1, limit);
        landed.elapsed()
    };
    let staging = dir.join("staging");
    let loaded_line = ["(re)loaded", name];
    let same_bytes = median(
        (0..SWAPS)
            .map(|i| {
                let seen = agent.count(&loaded_line);
                let service = format!("cron{i}");
                let text = policy(name, &service, &service_grants(&service));
                let landed = install(&staging, &dir.join("policy.toml"), text.as_bytes());
                reloaded(&loaded_line, landed, Duration::from_secs(60), seen)
            })
            .collect(),
    );
    let component = dir.join("served").join(format!("{name}.wasm"));
    let version = |bytes: &[u8]| medic_sandbox::content_hash(bytes)[..12].to_string();
    let swap = |bytes: &[u8], limit: Duration| {
        let hash = version(bytes);
        let line = ["(re)loaded", name, hash.as_str()];
        let seen = agent.count(&line);
        let landed = install(&staging, &component, bytes);
        reloaded(&line, landed, limit, seen)
    };
    let compiled = swap(rebuilt, COMPILE_LIMIT);
    // The rebuilt one serves from the quick tier while Cranelift compiles
    // it in the background: the memory is sampled once that is done (its
    // code cached, MAC last).
    let hash = medic_sandbox::content_hash(rebuilt);
    let cache = dir.join("state/cache");
    let deadline = Instant::now() + COMPILE_LIMIT;
    while !std::fs::read_dir(&cache).unwrap().any(|entry| {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        name.starts_with(&hash) && name.ends_with(".cwasm.mac")
    }) {
        assert!(
            Instant::now() < deadline,
            "the optimized code was never cached"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss_compiled_kib = agent.rss_kib();
    let cached = median(
        (0..SWAPS)
            .map(|i| {
                let bytes = if i % 2 == 0 { first } else { rebuilt };
                swap(bytes, Duration::from_secs(60))
            })
            .collect(),
    );
    std::thread::sleep(Duration::from_secs(2));
    Served {
        start,
        rss_kib,
        same_bytes,
        compiled,
        cached,
        rss_compiled_kib,
        rss_after_kib: agent.rss_kib(),
        rss_after_anon_kib: agent.memory_kib("RssAnon"),
        rss_after_file_kib: agent.memory_kib("RssFile"),
        code_maps: agent.code_maps(),
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    if let Ok(files) = std::env::var("LARGE_PLUGINS_COMPONENTS") {
        for file in files.split(',') {
            let bytes = std::fs::read(file).unwrap();
            compare(file, &bytes);
        }
        return;
    }

    // The Rust baseline.
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins");
    let rust = plugins.join("content-acl.wasm");
    let rust_agent = plugins.join("fixture-noop.wasm");
    let rust_baseline = rust.is_file() && rust_agent.is_file();
    if rust_baseline {
        let cache = root.join("rust-cache");
        let l = loading(&rust, &cache, &|runtime| {
            support::plugin(runtime, "content-acl")
        });
        println!(
            "Rust content-acl: {:.0} KiB; cold load {:.1} ms; cache entry {:.0} KiB; warm load {:.2} ms (read and hash {:.2} ms, cache lookup {:.2} ms); loaded again while loaded {:.2} ms; run {:.3} ms",
            l.size as f64 / 1024.0,
            ms(l.cold),
            l.cache_bytes as f64 / 1024.0,
            ms(l.warm),
            ms(l.read_hash),
            ms(l.lookup),
            ms(l.shared),
            ms(l.run)
        );
        let q = quick_loading(&|runtime| support::plugin(runtime, "content-acl"));
        println!(
            "Rust content-acl, quick tier: serving after {:.1} ms, a run {:.3} ms; optimized code after {:.1} ms",
            ms(q.serving),
            ms(q.run),
            ms(q.optimized)
        );
        let variants = compare("Rust content-acl", &std::fs::read(&rust).unwrap());
        println!(
            "BENCH large_plugins_rust size_kib={:.0} cold_ms={:.1} quick_ms={:.1} quick_run_ms={:.3} optimized_ms={:.1} cache_kib={:.0} warm_ms={:.2} read_hash_ms={:.2} lookup_ms={:.2} shared_ms={:.2} run_ms={:.3}{variants}",
            l.size as f64 / 1024.0,
            ms(l.cold),
            ms(q.serving),
            ms(q.run),
            ms(q.optimized),
            l.cache_bytes as f64 / 1024.0,
            ms(l.warm),
            ms(l.read_hash),
            ms(l.lookup),
            ms(l.shared),
            ms(l.run)
        );
    } else {
        println!(
            "SKIP large_plugins rust: no {} (build the plugins with `cargo xtask plugins`)",
            rust.display()
        );
    }

    let mut built = Vec::new();
    for lang in &LANGS {
        match build(root, lang) {
            Ok(b) => {
                println!(
                    "{}: built in {:.1} s (tools installed), rebuilt in {:.1} s",
                    lang.name,
                    b.build.as_secs_f64(),
                    b.rebuild.as_secs_f64()
                );
                built.push((lang, b));
            }
            Err(why) => println!("SKIP large_plugins {}: {why}", lang.lang),
        }
    }

    // The agent serving a small Rust plugin, to compare memory with.
    let base_rss_kib = rust_baseline.then(|| {
        let noop = "fixture-noop";
        let dir = agent_dir(root, noop, &rust_agent, "fs-read = [\"/tmp\"]");
        let (agent, _) = Agent::start(&dir, "policy.toml", dir.join("agent.log"));
        std::thread::sleep(Duration::from_secs(2));
        agent.rss_kib()
    });
    if let Some(kib) = base_rss_kib {
        println!(
            "agent serving the Rust fixture-noop: {:.1} MiB RSS",
            kib as f64 / 1024.0
        );
    }

    for (lang, b) in &built {
        let dir = agent_dir(root, lang.name, &b.first, &service_grants("cron"));
        // The library's cold load fills the agent's cache.
        let q = quick_loading(&|runtime| runtime.load_file(&b.first).unwrap());
        println!(
            "{}, quick tier: serving after {:.2} s, a run {:.2} ms; optimized code after {:.2} s",
            lang.name,
            q.serving.as_secs_f64(),
            ms(q.run),
            q.optimized.as_secs_f64()
        );
        let l = loading(&b.first, &dir.join("state/cache"), &|runtime| {
            runtime.load_file(&b.first).unwrap()
        });
        println!(
            "{}: {:.1} MiB; cold load {:.2} s ({:.2} s CPU; {:.0} MiB left to the allocator, given back by malloc_trim); cache entry {:.1} MiB; warm load {:.1} ms (read and hash {:.1} ms, cache lookup {:.1} ms: mapping the entry and its MAC {:.1} ms); loaded again while loaded {:.1} ms; run {:.2} ms",
            lang.name,
            mib(l.size),
            l.cold.as_secs_f64(),
            l.cold_cpu.as_secs_f64(),
            l.trimmed_kib as f64 / 1024.0,
            mib(l.cache_bytes),
            ms(l.warm),
            ms(l.read_hash),
            ms(l.lookup),
            ms(l.entry_mac),
            ms(l.shared),
            ms(l.run)
        );
        let (first, rebuilt) = (
            std::fs::read(&b.first).unwrap(),
            std::fs::read(&b.rebuilt).unwrap(),
        );
        let s = serve(&dir, lang.name, &first, &rebuilt);
        println!(
            "{}: agent start to ready {:.0} ms, {:.1} MiB RSS; reload with the same component {:.0} ms, with the rebuilt one {:.2} s (compiled; then {:.1} MiB RSS), back and forth {:.0} ms (cache; then {:.1} MiB RSS: {:.1} anonymous, {:.1} files; {} compiled components mapped)",
            lang.name,
            ms(s.start),
            s.rss_kib as f64 / 1024.0,
            ms(s.same_bytes),
            s.compiled.as_secs_f64(),
            s.rss_compiled_kib as f64 / 1024.0,
            ms(s.cached),
            s.rss_after_kib as f64 / 1024.0,
            s.rss_after_anon_kib as f64 / 1024.0,
            s.rss_after_file_kib as f64 / 1024.0,
            s.code_maps
        );
        let variants = compare(lang.name, &first);
        println!(
            "BENCH large_plugins_{} size_mib={:.2} build_s={:.1} rebuild_s={:.1} cold_ms={:.0} cold_cpu_ms={:.0} quick_ms={:.0} quick_run_ms={:.3} optimized_ms={:.0} trimmed_mib={:.1} cache_mib={:.2} warm_ms={:.2} read_hash_ms={:.2} lookup_ms={:.2} entry_mac_ms={:.2} shared_ms={:.2} run_ms={:.3} start_ms={:.1} rss_mib={:.1} base_rss_mib={:.1} reload_same_ms={:.1} reload_compiled_ms={:.0} rss_compiled_mib={:.1} reload_cached_ms={:.1} rss_after_mib={:.1} rss_after_anon_mib={:.1} rss_after_file_mib={:.1} code_maps={}{variants}",
            lang.lang,
            mib(l.size),
            b.build.as_secs_f64(),
            b.rebuild.as_secs_f64(),
            ms(l.cold),
            ms(l.cold_cpu),
            ms(q.serving),
            ms(q.run),
            ms(q.optimized),
            l.trimmed_kib as f64 / 1024.0,
            mib(l.cache_bytes),
            ms(l.warm),
            ms(l.read_hash),
            ms(l.lookup),
            ms(l.entry_mac),
            ms(l.shared),
            ms(l.run),
            ms(s.start),
            s.rss_kib as f64 / 1024.0,
            base_rss_kib.map_or(f64::NAN, |kib| kib as f64 / 1024.0),
            ms(s.same_bytes),
            ms(s.compiled),
            s.rss_compiled_kib as f64 / 1024.0,
            ms(s.cached),
            s.rss_after_kib as f64 / 1024.0,
            s.rss_after_anon_kib as f64 / 1024.0,
            s.rss_after_file_kib as f64 / 1024.0,
            s.code_maps
        );
    }
}
