//! Compiling a tenant's component, bounded. Compilation is the one thing a
//! tenant's upload makes the host do before any limit of a call applies,
//! and its cost grows faster than the component does. So a tenant's bytes
//! are compiled in a child process (`oms compile-plugin`) at the lowest CPU
//! priority, one at a time, under a CPU-time and a memory limit set on that
//! process and a wall-clock deadline; over any of them, the upload is
//! refused with `COMPILE_BUDGET_EXCEEDED` and nothing is stored. The
//! threads that serve orders never compile tenant code.

use super::LoadError;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What one compilation may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileBudget {
    /// CPU time over all the compiler's threads.
    pub cpu: Duration,
    pub wall: Duration,
    /// Heap the compiler may allocate.
    pub memory_bytes: u64,
}

impl Default for CompileBudget {
    /// The Python guest (18 MB, 13,478 functions) compiles in about 20 s of
    /// CPU and 1.2 GB; these leave it room on a slow machine.
    fn default() -> Self {
        Self {
            cpu: Duration::from_secs(120),
            wall: Duration::from_secs(180),
            memory_bytes: 2 << 30,
        }
    }
}

impl CompileBudget {
    /// The default, with `OMS_COMPILE_CPU_SECONDS`, `OMS_COMPILE_WALL_SECONDS`
    /// and `OMS_COMPILE_MEMORY_MB` taken where set.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let d = Self::default();
        Self {
            cpu: var("OMS_COMPILE_CPU_SECONDS").map_or(d.cpu, Duration::from_secs),
            wall: var("OMS_COMPILE_WALL_SECONDS").map_or(d.wall, Duration::from_secs),
            memory_bytes: var("OMS_COMPILE_MEMORY_MB").map_or(d.memory_bytes, |mb| mb << 20),
        }
    }
}

/// Runs the compiler process; one compilation at a time per host.
#[derive(Debug)]
pub struct CompilerProcess {
    pub exe: PathBuf,
    pub budget: CompileBudget,
    one_at_a_time: Mutex<()>,
}

/// The child's exit code when the compiler refused the component.
const REFUSED: i32 = 2;

impl CompilerProcess {
    pub fn new(exe: PathBuf, budget: CompileBudget) -> Self {
        Self {
            exe,
            budget,
            one_at_a_time: Mutex::new(()),
        }
    }

    /// The component's native code, as `Engine::precompile_component` makes it.
    pub fn compile(&self, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        let _turn = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let unavailable = |e: std::io::Error| LoadError::Invalid(format!("compiler process: {e}"));
        // Lowest priority: a compilation takes what serving orders leaves.
        let nice = std::path::Path::new("/usr/bin/nice");
        let mut cmd = if nice.exists() {
            let mut c = Command::new(nice);
            c.args(["-n", "19"]).arg(&self.exe);
            c
        } else {
            Command::new(&self.exe)
        };
        let mut child = cmd
            .arg("compile-plugin")
            .arg("--cpu-seconds")
            .arg(self.budget.cpu.as_secs().max(1).to_string())
            .arg("--memory-bytes")
            .arg(self.budget.memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(unavailable)?;
        // Feed and drain concurrently: the pipes hold only a few KiB.
        let mut stdin = child.stdin.take();
        let input = bytes.to_vec();
        let feeder = std::thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                // A child that died early closes the pipe; its status says why.
                let _ = s.write_all(&input);
            }
        });
        let mut stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out);
            }
            out
        });
        let mut stderr = child.stderr.take();
        let errors = std::thread::spawn(move || {
            let mut out = String::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(16 << 10).read_to_string(&mut out);
            }
            out
        });
        let deadline = Instant::now() + self.budget.wall;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(unavailable)? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = feeder.join();
        let artifact = reader.join().unwrap_or_default();
        let message = errors.join().unwrap_or_default();
        match status {
            None => Err(LoadError::OverBudget(format!(
                "compiling took longer than {} s",
                self.budget.wall.as_secs()
            ))),
            Some(s) if s.success() => Ok(artifact),
            Some(s) => Err(self.failure(s, message.trim())),
        }
    }

    fn failure(&self, status: ExitStatus, message: &str) -> LoadError {
        use std::os::unix::process::ExitStatusExt;
        const SIGKILL: i32 = 9;
        const SIGXCPU: i32 = 24;
        if status.code() == Some(REFUSED) {
            return LoadError::Invalid(message.to_string());
        }
        match status.signal() {
            Some(SIGXCPU | SIGKILL) => LoadError::OverBudget(format!(
                "compiling took more than {} s of CPU",
                self.budget.cpu.as_secs()
            )),
            _ if message.contains("memory allocation") => LoadError::OverBudget(format!(
                "compiling needed more than {} MiB of memory",
                self.budget.memory_bytes >> 20
            )),
            _ => LoadError::OverBudget(format!(
                "the compiler gave up ({status}): {}",
                message.lines().last().unwrap_or_default()
            )),
        }
    }
}

/// `oms compile-plugin`: reads a component on stdin, writes its native code
/// to stdout, under the CPU-time and memory limits given. Exit code 2 when
/// the compiler refuses it (its reason on stderr).
pub fn child_main(cpu_seconds: u64, memory_bytes: u64) -> i32 {
    use rlimit::Resource;
    // The hard CPU limit a little past the soft one: SIGXCPU first, then SIGKILL.
    let limits = [
        (Resource::CPU, cpu_seconds, cpu_seconds + 5),
        (Resource::DATA, memory_bytes, memory_bytes),
    ];
    for (resource, soft, hard) in limits {
        if let Err(e) = resource.set(soft, hard) {
            eprintln!("cannot limit {resource:?}: {e}");
            return 1;
        }
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("reading the component: {e}");
        return 1;
    }
    let engine = match wasmtime::Engine::new(&super::compiler_config()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("engine: {e:#}");
            return 1;
        }
    };
    match engine.precompile_component(&bytes) {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("writing native code: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            REFUSED
        }
    }
}
