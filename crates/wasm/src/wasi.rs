//! The WASI a plugin gets: the interfaces a guest's standard library
//! imports, each with nothing behind it, and none that can make the host
//! wait.
//!
//! The call deadline interrupts guest code only: a host function that
//! blocks holds the calling thread, and the pipeline with it, for as long
//! as it blocks. Most of WASI p2 never blocks here (no files, no sockets,
//! an empty stdin); what could is waiting on a pollable. So the host
//! provides its own `wasi:clocks/monotonic-clock`, stopped at 0 like the
//! wall clock, on which every wait is over at once: no time passes inside a
//! plugin, so a plugin that sleeps goes on at once, and one that waits for
//! its clock to move loops until the deadline stops it. Its own
//! `wasi:cli/stdout` and `stderr` send what a plugin prints to the log
//! (see [`crate::output`]) and are always ready too. Every pollable a plugin
//! can make is therefore ready, and `wasi:io/poll` returns at once.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::p2::bindings::sync as wasi_sync;
use wasmtime_wasi::p2::bindings::{cli, clocks, io, random};
use wasmtime_wasi::p2::{DynOutputStream, DynPollable, Pollable, subscribe};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView, async_trait,
};

use crate::limits::MemoryCap;
use crate::output::{PluginOutput, Stream};

/// What a plugin's store holds besides wasm state: a WASI context that grants
/// nothing, the limits the store enforces, and where its output goes.
pub(super) struct PluginState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: MemoryCap,
    pub(super) output: Arc<PluginOutput>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The interfaces (without version) a plugin may import, all satisfied with
/// no capability: no preopened directory, no environment variables or
/// arguments, empty stdin, stdout and stderr sent to the log, clocks stopped
/// at the epoch and fixed randomness.
///
/// A Rust guest's standard library imports these whatever the plugin does;
/// anything else (files, sockets, HTTP) gives a plugin a way to depend on or
/// reach the machine, so a component importing it is refused at load.
pub const GRANTED_IMPORTS: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    // Types only: the aggregator interface's records.
    "sluice:plugin/types",
];

/// A clock stopped at the epoch: plugins get no time source, so their results
/// depend on the events alone and stay deterministic.
pub(super) struct StoppedClock;

impl HostWallClock for StoppedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The host's own WASI functions (the stopped monotonic clock and the
/// standard output streams), on a plugin's resource table and output.
pub(super) struct Sandboxed;

impl HasData for Sandboxed {
    type Data<'a> = SandboxedView<'a>;
}

/// What [`Sandboxed`] functions work on.
pub(super) struct SandboxedView<'a> {
    table: &'a mut ResourceTable,
    output: &'a Arc<PluginOutput>,
}

/// A wait on the stopped monotonic clock, over as soon as it starts.
struct Elapsed;

#[async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

impl SandboxedView<'_> {
    fn elapsed(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let wait = self.table.push(Elapsed)?;
        subscribe(self.table, wait)
    }

    fn stream(&mut self, stream: Stream) -> wasmtime::Result<Resource<DynOutputStream>> {
        let stream: DynOutputStream = Box::new(self.output.stream(stream));
        Ok(self.table.push(stream)?)
    }
}

impl clocks::monotonic_clock::Host for SandboxedView<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(HostMonotonicClock::now(&StoppedClock))
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(HostMonotonicClock::resolution(&StoppedClock))
    }

    fn subscribe_instant(&mut self, _when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.elapsed()
    }

    fn subscribe_duration(&mut self, _duration: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.elapsed()
    }
}

impl cli::stdout::Host for SandboxedView<'_> {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        self.stream(Stream::Stdout)
    }
}

impl cli::stderr::Host for SandboxedView<'_> {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        self.stream(Stream::Stderr)
    }
}

/// `wasi:io` works on the resource table alone.
struct IoTable;

impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// Links exactly the [`GRANTED_IMPORTS`] of WASI p2, so that even a check
/// missed at load could not hand a plugin a file or a socket.
pub(super) fn link_granted(l: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    type S = PluginState;
    fn sandboxed(s: &mut S) -> SandboxedView<'_> {
        SandboxedView {
            table: &mut s.table,
            output: &s.output,
        }
    }
    io::error::add_to_linker::<S, IoTable>(l, |s| &mut s.table)?;
    wasi_sync::io::poll::add_to_linker::<S, IoTable>(l, |s| &mut s.table)?;
    wasi_sync::io::streams::add_to_linker::<S, IoTable>(l, |s| &mut s.table)?;
    cli::environment::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::exit::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stdin::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stdout::add_to_linker::<S, Sandboxed>(l, sandboxed)?;
    cli::stderr::add_to_linker::<S, Sandboxed>(l, sandboxed)?;
    cli::terminal_input::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_output::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stdin::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stdout::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stderr::add_to_linker::<S, WasiCli>(l, S::cli)?;
    clocks::wall_clock::add_to_linker::<S, WasiClocks>(l, S::clocks)?;
    clocks::monotonic_clock::add_to_linker::<S, Sandboxed>(l, sandboxed)?;
    random::random::add_to_linker::<S, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure::add_to_linker::<S, WasiRandom>(l, |s| s.wasi.random())?;
    random::insecure_seed::add_to_linker::<S, WasiRandom>(l, |s| s.wasi.random())?;
    Ok(())
}
