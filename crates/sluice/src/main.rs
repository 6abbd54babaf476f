//! The `sluice` command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sluice::error::{Error, IoError};
use sluice::pipeline::{self, RunOptions};
use sluice::scaffold::{self, Language};
use sluice_core::plugin::grouped::GroupedAggregation as _;
use sluice_core::plugin::grouped_laws;
use sluice_core::plugin::laws::{self, LawOptions};
use sluice_core::plugin::trigger_laws;
use sluice_core::plugin::{Aggregation, OutputSpec, PluginInfo};
use sluice_wasm::cache::CacheSetting;
use sluice_wasm::registry::{self, BUILTIN_PREFIX};
use sluice_wasm::{
    AnyAggregator, CompiledGrouped, CompiledPlugin, CompiledTrigger, PluginEngine, PluginLimits,
};

/// jemalloc for the whole process. Its unprefixed `malloc` and `free`
/// serve the C libraries as well as Rust: librdkafka allocates each fetched
/// message on its fetch thread and the poll loop frees it, which under
/// glibc's allocator made the loop wait on that thread's arena lock (why
/// jemalloc: docs/dependencies.md; the Kafka figures: docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Windowed stream aggregation with WebAssembly plugins.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline to the end of its input.
    Run {
        /// The pipeline file (YAML); `SLUICE_`-prefixed environment variables override its keys.
        #[arg(long, short)]
        config: PathBuf,
        /// Values buffered per plugin call; changes speed, never results.
        #[arg(long, value_parser = batch_size)]
        batch_size: Option<usize>,
        /// Window workers sharing the keys; changes speed, never results.
        #[arg(long, value_parser = parallelism)]
        parallelism: Option<usize>,
    },
    /// Check a pipeline without running it: load the config, compile and
    /// open its plugins and trigger, check the source file exists; open no
    /// output, read no event. Exit 0 when it would start, 2 when not.
    Validate {
        /// The pipeline file (YAML); `SLUICE_`-prefixed environment variables override its keys.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Work with a state directory (`state.path` of a RocksDB pipeline).
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// List the checkpoints of a state directory, and the newest one's
    /// windows per key and state size per aggregation.
    Inspect {
        /// The state directory.
        dir: PathBuf,
        /// How many keys to list, those with most open windows first.
        #[arg(long, default_value_t = 20)]
        keys: usize,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print a plugin's self-description, outputs (or, for a trigger, the
    /// columns it watches) and WIT world.
    Inspect {
        /// A `.wasm` component (an aggregator or a trigger), or `builtin/NAME`.
        plugin: String,
        /// The plugin config (JSON) to list outputs for.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Take `builtin/NAME` from the built-in triggers (only needed for a
        /// name that is both, `count`).
        #[arg(long)]
        trigger: bool,
    },
    /// List the built-in aggregators and triggers.
    List,
    /// Ask a running pipeline (one with `reload: { admin: ... }`) to check
    /// its plugin files and swap in new versions; prints its answer and
    /// exits 1 if a version was refused.
    Reload {
        /// The pipeline's admin address, as in its `reload.admin`.
        #[arg(long, default_value = "127.0.0.1:9465")]
        admin: String,
    },
    /// Create a plugin that builds as it is: a Rust crate against the SDK,
    /// or a Python, JavaScript or C project with a `build.sh`.
    New {
        /// Crate and plugin name (lowercase letters, digits, `-`, `_`).
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: Language,
        /// Directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The SDK to depend on (default: this checkout's `sdk/`).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Check the laws a correct aggregator satisfies (merge associativity,
    /// snapshot round trips, determinism, batch independence), or those of a
    /// trigger (determinism, snapshot round trips, later timers), on
    /// generated data; exits 1 if any fails, 2 if the plugin cannot be loaded.
    Test {
        /// A `.wasm` component (an aggregator or a trigger), or `builtin/NAME`.
        plugin: String,
        /// The plugin config (JSON) to test with.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Take `builtin/NAME` from the built-in triggers (only needed for a
        /// name that is both, `count`).
        #[arg(long)]
        trigger: bool,
        /// Generated cases per law.
        #[arg(long, default_value_t = 100)]
        cases: usize,
        /// Seed of the data generator; the same seed checks the same inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// `--batch-size`: a whole number of at least 1 (0 would buffer nothing).
fn batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?} is not a whole number ({e})")),
    }
}

/// `--parallelism`: 1 to [`sluice_config::MAX_PARALLELISM`] window workers.
fn parallelism(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=sluice_config::MAX_PARALLELISM).contains(&n) => Ok(n),
        Ok(n) => Err(format!(
            "must be 1 to {}, not {n}",
            sluice_config::MAX_PARALLELISM
        )),
        Err(e) => Err(format!("{text:?} is not a whole number ({e})")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run {
            config,
            batch_size,
            parallelism,
        } => {
            let options = RunOptions {
                batch_size,
                parallelism,
            };
            pipeline::run_file(&config, &options).map(|summary| {
                sluice::logging::last_words(&summary.to_string(), false);
                // A file or stdin run stopped by a signal did not read its
                // input to the end: its output is not complete, which a
                // script must not take for success (the shell's 128 + N).
                match summary.stopped_by {
                    Some(signal) => {
                        ExitCode::from(u8::try_from(signal).map_or(1, |n| 128u8.saturating_add(n)))
                    }
                    None => ExitCode::SUCCESS,
                }
            })
        }
        Command::Validate { config } => pipeline::validate_file(&config).map(|report| {
            print!("{report}");
            ExitCode::SUCCESS
        }),
        Command::Plugin {
            command:
                PluginCommand::Inspect {
                    plugin,
                    config,
                    trigger,
                },
        } => inspect(&plugin, &config, trigger).map(|()| ExitCode::SUCCESS),
        Command::Plugin {
            command:
                PluginCommand::Test {
                    plugin,
                    config,
                    trigger,
                    cases,
                    seed,
                },
        } => test_laws(&plugin, &config, trigger, LawOptions { cases, seed }),
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    dir,
                    sdk,
                },
        } => {
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk_dir);
            let checkout = scaffold::default_checkout_dir();
            scaffold::new_plugin(&name, lang, &dir, &sdk, &checkout).map(|root| {
                let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
                print!(
                    "{}",
                    scaffold::next_steps(&name, lang, &root, target.as_deref())
                );
                ExitCode::SUCCESS
            })
        }
        Command::State {
            command: StateCommand::Inspect { dir, keys },
        } => sluice_rocks::inspect::report(&dir, keys)
            .map(|text| {
                print!("{text}");
                ExitCode::SUCCESS
            })
            .map_err(Error::from),
        Command::Plugin {
            command: PluginCommand::Reload { admin },
        } => reload(&admin),
        Command::Plugin {
            command: PluginCommand::List,
        } => {
            println!("aggregators (a pipeline's `aggregations:`):");
            for name in registry::builtin_names() {
                println!("  {BUILTIN_PREFIX}{name}");
            }
            println!("triggers (a pipeline's `trigger:`):");
            for name in registry::builtin_trigger_names() {
                println!("  {BUILTIN_PREFIX}{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            sluice::logging::last_words(&e.to_string(), true);
            ExitCode::from(e.exit_code())
        }
    }
}

/// `sluice plugin test`: one line per law; exit 1 if any law fails. An
/// aggregator is checked against the aggregator laws, a trigger against
/// the trigger laws.
fn test_laws(
    reference: &str,
    config: &str,
    trigger: bool,
    options: LawOptions,
) -> Result<ExitCode, Error> {
    let engine = PluginEngine::with_cache(PluginLimits::default(), &CacheSetting::from_env())?;
    let report = match load(&engine, reference, trigger)? {
        Loaded::Aggregator(plugin, _) => {
            let mut instance = engine.open_aggregation(&plugin, config)?;
            announce(instance.label(), config, &options);
            laws::check(&mut instance, &options)
        }
        Loaded::Grouped(plugin, _) => {
            let mut instance = engine.open_grouped(&plugin, config)?;
            announce(instance.label(), config, &options);
            grouped_laws::check(&mut instance, &options)
        }
        Loaded::Trigger(plugin, _) => {
            use sluice_core::plugin::TriggerPolicy as _;
            let mut instance = engine.open_trigger(&plugin, config)?;
            announce(instance.label(), config, &options);
            trigger_laws::check(&mut instance, &options)
        }
    };
    // A closed stdout (`| head`) ends the listing, not the process.
    let mut out = std::io::stdout().lock();
    for result in &report.results {
        if writeln!(out, "{result}").is_err() {
            break;
        }
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The first line of `plugin test`: what is tested, how much, with which seed.
fn announce(label: &str, config: &str, options: &LawOptions) {
    let _ = writeln!(
        std::io::stdout(),
        "testing {label} with config {config}, {} cases per law, seed {}",
        options.cases,
        options.seed
    );
}

/// A plugin loaded by `plugin inspect` or `plugin test`, with its size.
enum Loaded {
    Aggregator(CompiledPlugin, usize),
    /// A component of interface 0.2 (typed inputs, grouped calls).
    Grouped(CompiledGrouped, usize),
    Trigger(CompiledTrigger, usize),
}

/// Loads `reference` as an aggregator or a trigger.
///
/// A `builtin/NAME` is a trigger when `--trigger` says so or when only the
/// triggers have that name; a file is a trigger when it is not an
/// aggregator of interface 0.1 or 0.2 but compiles against the trigger
/// world (otherwise the aggregator's refusal is the error: it names what
/// the file exports).
fn load(engine: &PluginEngine, reference: &str, trigger: bool) -> Result<Loaded, Error> {
    let here = std::path::Path::new(".");
    let only_a_trigger = reference.strip_prefix(BUILTIN_PREFIX).is_some_and(|name| {
        registry::builtin_names().all(|n| n != name)
            && registry::builtin_trigger_names().any(|n| n == name)
    });
    if trigger || only_a_trigger {
        let bytes = registry::trigger_bytes(reference, here)?;
        let plugin = engine.compile_trigger(reference, &bytes)?;
        return Ok(Loaded::Trigger(plugin, bytes.len()));
    }
    let bytes = registry::plugin_bytes(reference, here)?;
    match engine.compile_any(reference, &bytes) {
        Ok(AnyAggregator::PerWindow(plugin)) => Ok(Loaded::Aggregator(plugin, bytes.len())),
        Ok(AnyAggregator::Grouped(plugin)) => Ok(Loaded::Grouped(plugin, bytes.len())),
        Err(not_an_aggregator) => match engine.compile_trigger(reference, &bytes) {
            Ok(plugin) => Ok(Loaded::Trigger(plugin, bytes.len())),
            Err(_) => Err(not_an_aggregator.into()),
        },
    }
}

/// `sluice plugin inspect`: an aggregator's or a trigger's self-description.
fn inspect(reference: &str, config: &str, trigger: bool) -> Result<(), Error> {
    let limits = PluginLimits::default();
    let engine = PluginEngine::with_cache(limits.clone(), &CacheSetting::from_env())?;
    let (imports, exports) = match load(&engine, reference, trigger)? {
        Loaded::Aggregator(plugin, size) => {
            inspect_aggregator(&engine, &plugin, reference, size, config)?
        }
        Loaded::Grouped(plugin, size) => {
            inspect_grouped(&engine, &plugin, reference, size, config)?
        }
        Loaded::Trigger(plugin, size) => {
            inspect_trigger(&engine, &plugin, reference, size, config)?
        }
    };
    println!("world:");
    for e in &exports {
        println!("  export {e}");
    }
    for i in &imports {
        println!("  import {i}  (granted no capability)");
    }
    println!(
        "limits:        call timeout {}, memory {} MiB, fuel {}",
        humantime::format_duration(limits.call_timeout),
        limits.memory_limit >> 20,
        limits.fuel.map_or("off".to_string(), |f| f.to_string())
    );
    Ok(())
}

/// The part of `plugin inspect` an aggregator has: its self-description
/// and outputs. Returns its WIT world for the common part.
fn inspect_aggregator(
    engine: &PluginEngine,
    plugin: &CompiledPlugin,
    reference: &str,
    size: usize,
    config: &str,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let instance = engine.open_aggregation(plugin, config)?;
    let info = instance.info();
    println!("plugin:        {reference} ({size} bytes), an aggregator of interface 0.1");
    print_info(
        info,
        &[
            ("mergeable", info.mergeable),
            ("commutative", info.commutative),
        ],
    );
    println!("compile cache: {}", plugin.cache);
    print_outputs(config, instance.outputs());
    Ok(engine.world(plugin))
}

/// The self-description every kind of plugin gives `plugin inspect`, with
/// the yes-or-no properties of its kind (`mergeable`) before its config.
fn print_info(info: &PluginInfo, properties: &[(&str, bool)]) {
    println!("name:          {}", info.name);
    println!("version:       {}", info.version);
    println!("description:   {}", info.description);
    println!("state version: {}", info.state_version);
    for (name, yes) in properties {
        let label = format!("{name}:");
        println!("{label:<15}{}", if *yes { "yes" } else { "no" });
    }
    println!("config:        {}", info.config_help);
}

/// An aggregator's outputs, as `plugin inspect` lists them.
fn print_outputs(config: &str, outputs: &[OutputSpec]) {
    println!("outputs with config {config}:");
    for o in outputs {
        println!("  {:<14} {:<8} {}", o.name, o.kind.name(), o.description);
    }
}

/// The part of `plugin inspect` a component of interface 0.2 has: its
/// self-description, its typed inputs (which a pipeline binds to event
/// fields) and its outputs with their kinds.
fn inspect_grouped(
    engine: &PluginEngine,
    plugin: &CompiledGrouped,
    reference: &str,
    size: usize,
    config: &str,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let instance = engine.open_grouped(plugin, config)?;
    let info = instance.info();
    println!("plugin:        {reference} ({size} bytes), an aggregator of interface 0.2");
    print_info(
        info,
        &[
            ("mergeable", info.mergeable),
            ("commutative", info.commutative),
        ],
    );
    println!("compile cache: {}", plugin.cache);
    println!("inputs with config {config}:");
    for i in instance.inputs() {
        let missing = if i.optional {
            "may be missing"
        } else {
            "required"
        };
        println!(
            "  {:<14} {:<9} {:<14} {}",
            i.name,
            i.kind.name(),
            missing,
            i.description
        );
    }
    print_outputs(config, instance.outputs());
    Ok(engine.grouped_world(plugin))
}

/// The part of `plugin inspect` a trigger has: its self-description and
/// the result columns it previews with `config`.
fn inspect_trigger(
    engine: &PluginEngine,
    plugin: &CompiledTrigger,
    reference: &str,
    size: usize,
    config: &str,
) -> Result<(Vec<String>, Vec<String>), Error> {
    use sluice_core::plugin::TriggerPolicy as _;
    let instance = engine.open_trigger(plugin, config)?;
    println!("plugin:        {reference} ({size} bytes), a trigger (a pipeline's `trigger:`)");
    if let Some(info) = instance.info() {
        print_info(info, &[]);
    }
    let watches = instance.watches();
    if watches.is_empty() {
        println!("watches with config {config}: no result columns");
    } else {
        println!("watches with config {config}:");
        for column in watches {
            println!("  {column}");
        }
    }
    Ok(engine.trigger_world(plugin))
}

/// `sluice plugin reload`: `POST /admin/reload` to a running pipeline.
fn reload(admin: &str) -> Result<ExitCode, Error> {
    use std::io::{Read as _, Write as _};
    let io = |source: std::io::Error| {
        Error::Io(IoError {
            action: "asking for a reload at",
            path: admin.into(),
            source,
        })
    };
    let mut stream = std::net::TcpStream::connect(admin).map_err(io)?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(600)))
        .map_err(io)?;
    write!(
        stream,
        "POST /admin/reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    print!("{body}");
    Ok(match status {
        "200" => ExitCode::SUCCESS,
        _ => {
            if body.is_empty() {
                eprintln!("sluice: the pipeline answered {status}");
            }
            ExitCode::FAILURE
        }
    })
}
