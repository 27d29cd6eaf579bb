//! ONNX Runtime through the `ort` crate, with the shared library loaded at run time.
//!
//! The library comes from the PyPI wheel `onnxruntime==1.32.0`
//! (`onnxruntime/capi/libonnxruntime.so.1.32.0`; the repository's `tests/py/ort_env.sh` installs it
//! and prints the path). [`OrtRuntime::new`] takes that path or finds it with [`find_library`]
//! (`ORT_DYLIB_PATH`, else the venv `tests/py/ort_env.sh` creates); a missing library is an
//! [`OnnxError::RuntimeMissing`] that says how to get it — never a panic (`ort::init()` would panic
//! lazily, so `ort::init_from` is used).
//!
//! ONNX Runtime allows one environment per process: the first successful [`OrtRuntime::new`]
//! creates it, later calls share it (and must name the same library).
//!
//! Sessions use graph optimisation level 3 (layout optimisations included), a given number of
//! intra-op threads, and execution providers in the order asked for. A provider the library does
//! not offer (CUDA with the CPU wheel) is an error, or — with [`SessionOptions::allow_fallback`] —
//! a logged fallback recorded in [`OrtSession::fallbacks`]; [`OrtSession::active_providers`] names
//! the providers actually registered.
//!
//! `session.run` needs exclusive access to an ONNX Runtime session, so an [`OrtSession`] is a small
//! pool: up to [`SessionOptions::replicas`] sessions of the same model, created on demand, one per
//! concurrent caller (e.g. one per engine worker), each with `intra_threads` threads.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};

use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::builder::ElemType;
use super::OnnxError;

/// How to obtain the ONNX Runtime library, quoted by [`OnnxError::RuntimeMissing`].
pub const RUNTIME_HINT: &str = "Run `bash tests/py/ort_env.sh` in the idflow repository (it creates a venv with the wheel and prints the library path), or `pip install onnxruntime==1.32.0`; then set ORT_DYLIB_PATH to the absolute path of onnxruntime/capi/libonnxruntime.so.1.32.0";

/// Environment variable naming the ONNX Runtime library file.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Environment variable naming the venv of `tests/py/ort_env.sh` (searched when
/// [`DYLIB_ENV`] is unset).
pub const VENV_ENV: &str = "IDFLOW_ORT_VENV";

/// The venvs searched for the library when `ORT_DYLIB_PATH` is unset, in order: `$IDFLOW_ORT_VENV`;
/// else `$CARGO_TARGET_DIR/ort-venv`; else `ort-venv` in the folder above and two folders above
/// the running executable (a cargo-built `idflow` lives in `<target>/debug/` or
/// `<target>/release/`, test executables in `<target>/debug/deps/`) — the places
/// `tests/py/ort_env.sh` installs to.
pub fn venv_candidates() -> Vec<PathBuf> {
    if let Some(v) = std::env::var_os(VENV_ENV).filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(v)];
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(t).join("ort-venv")];
    }
    let mut out = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        for _ in 0..2 {
            dir = dir.and_then(|d| d.parent().map(Path::to_path_buf));
            if let Some(d) = &dir {
                out.push(d.join("ort-venv"));
            }
        }
    }
    out
}

/// `onnxruntime/capi/libonnxruntime.so.<ORT_VERSION>` inside a venv (`lib/python3*/site-packages`).
pub fn library_in_venv(venv: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(venv.join("lib")).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    libs.sort();
    libs.into_iter()
        .map(|py| py.join("site-packages/onnxruntime/capi").join(format!("libonnxruntime.so.{ORT_VERSION}")))
        .find(|p| p.is_file())
}

/// The ONNX Runtime library to load: `ORT_DYLIB_PATH` when set (it must exist), else the
/// library in the first of [`venv_candidates`] that has one. The error lists what was tried.
pub fn find_library() -> Result<PathBuf, OnnxError> {
    if let Some(p) = std::env::var_os(DYLIB_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let venvs = venv_candidates();
    if let Some(lib) = venvs.iter().find_map(|v| library_in_venv(v)) {
        return Ok(lib);
    }
    let tried: Vec<String> = venvs.iter().map(|v| v.display().to_string()).collect();
    Err(OnnxError::RuntimeMissing {
        reason: format!("{DYLIB_ENV} is not set and no onnxruntime {ORT_VERSION} venv was found (looked in: {})", tried.join(", ")),
        hint: RUNTIME_HINT,
    })
}

/// The ONNX Runtime release idflow is tested against.
pub const ORT_VERSION: &str = "1.32.0";

static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// An execution provider, parsed from `cpu`, `cuda`, `cuda:<device>`, `tensorrt`, `tensorrt:<device>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionProvider {
    /// ONNX Runtime's default CPU provider.
    Cpu,
    /// NVIDIA CUDA (needs the `onnxruntime-gpu` wheel).
    Cuda {
        /// GPU ordinal.
        device_id: i32,
    },
    /// NVIDIA TensorRT (needs a TensorRT-enabled build).
    TensorRt {
        /// GPU ordinal.
        device_id: i32,
    },
}

impl ExecutionProvider {
    /// The provider's name inside ONNX Runtime (e.g. `CUDAExecutionProvider`).
    pub fn ort_name(&self) -> &'static str {
        match self {
            Self::Cpu => ort::ep::CPU::NAME,
            Self::Cuda { .. } => ort::ep::CUDA::NAME,
            Self::TensorRt { .. } => ort::ep::TensorRT::NAME,
        }
    }

    fn is_available(&self) -> Result<bool, OnnxError> {
        let r = match self {
            Self::Cpu => ort::ep::CPU::is_available(),
            Self::Cuda { .. } => ort::ep::CUDA::is_available(),
            Self::TensorRt { .. } => ort::ep::TensorRT::is_available(),
        };
        r.map_err(|e| OnnxError::Runtime(e.to_string()))
    }

    fn dispatch(&self) -> ort::ep::ExecutionProviderDispatch {
        match *self {
            Self::Cpu => ort::ep::CPU::default().build(),
            Self::Cuda { device_id } => ort::ep::CUDA::default().with_device_id(device_id).build(),
            Self::TensorRt { device_id } => ort::ep::TensorRT::default().with_device_id(device_id).build(),
        }
        .error_on_failure()
    }
}

impl FromStr for ExecutionProvider {
    type Err = OnnxError;

    fn from_str(s: &str) -> Result<Self, OnnxError> {
        let (name, device) = match s.split_once(':') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        let device_id = match device {
            None => 0,
            Some(d) => {
                d.parse::<i32>().map_err(|_| OnnxError::Config(format!("execution provider `{s}`: device `{d}` is not an integer")))?
            }
        };
        match name.to_ascii_lowercase().as_str() {
            "cpu" if device.is_none() => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { device_id }),
            "tensorrt" | "trt" => Ok(Self::TensorRt { device_id }),
            _ => Err(OnnxError::Config(format!("unknown execution provider `{s}` (expected cpu, cuda[:N] or tensorrt[:N])"))),
        }
    }
}

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Threads inside one operator (`0` = ONNX Runtime's default, one per core). Keep
    /// `workers × intra_threads ≤ cores`.
    pub intra_threads: usize,
    /// Execution providers in priority order; ONNX Runtime always keeps CPU as the last resort.
    pub providers: Vec<ExecutionProvider>,
    /// Whether an unavailable provider is skipped with a warning instead of failing.
    pub allow_fallback: bool,
    /// How many sessions of the model an [`OrtSession`] may hold, i.e. how many callers can run
    /// it at the same time (`0` counts as 1). Sessions beyond the first are created on first
    /// concurrent use; each holds its own copy of the weights.
    pub replicas: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { intra_threads: 0, providers: vec![ExecutionProvider::Cpu], allow_fallback: false, replicas: 1 }
    }
}

impl SessionOptions {
    /// CPU only, with `threads` intra-op threads.
    pub fn cpu(threads: usize) -> Self {
        Self { intra_threads: threads, ..Self::default() }
    }
}

/// A loaded ONNX Runtime library (the process-wide environment).
#[derive(Clone)]
pub struct OrtRuntime {
    dylib: PathBuf,
    env: Environment,
}

impl std::fmt::Debug for OrtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRuntime").field("dylib", &self.dylib).finish()
    }
}

impl OrtRuntime {
    /// Loads ONNX Runtime from `dylib`, or from [`find_library`]'s choice when `None`.
    pub fn new(dylib: Option<&Path>) -> Result<Self, OnnxError> {
        let path = match dylib {
            Some(p) => p.to_path_buf(),
            None => find_library()?,
        };
        if !path.is_file() {
            return Err(OnnxError::RuntimeMissing {
                reason: format!("{} does not exist or is not a file", path.display()),
                hint: RUNTIME_HINT,
            });
        }
        let canonical = path
            .canonicalize()
            .map_err(|e| OnnxError::RuntimeMissing { reason: format!("{}: {e}", path.display()), hint: RUNTIME_HINT })?;
        let mut guard = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((loaded, env)) = guard.as_ref() {
            if *loaded != canonical {
                return Err(OnnxError::Runtime(format!(
                    "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
                    loaded.display(),
                    canonical.display()
                )));
            }
            return Ok(Self { dylib: loaded.clone(), env: env.clone() });
        }
        let builder = ort::init_from(&canonical).map_err(|e| OnnxError::RuntimeMissing { reason: e.to_string(), hint: RUNTIME_HINT })?;
        let env = builder
            .with_name("idflow")
            .with_telemetry(false)
            .build()
            .map_err(|e| OnnxError::Runtime(format!("cannot create the ONNX Runtime environment: {e}")))?;
        *guard = Some((canonical.clone(), env.clone()));
        Ok(Self { dylib: canonical, env })
    }

    /// The library in use.
    pub fn dylib(&self) -> &Path {
        &self.dylib
    }

    /// Version string reported by the loaded library's build info.
    pub fn build_info(&self) -> String {
        ort::info().to_string()
    }

    /// Names of the providers (among CPU, CUDA, TensorRT) this ONNX Runtime build offers.
    pub fn available_providers(&self) -> Vec<String> {
        [ExecutionProvider::Cpu, ExecutionProvider::Cuda { device_id: 0 }, ExecutionProvider::TensorRt { device_id: 0 }]
            .iter()
            .filter(|p| p.is_available().unwrap_or(false))
            .map(|p| p.ort_name().to_string())
            .collect()
    }

    /// Creates a session from serialised model bytes (kept in memory when `replicas > 1`, to
    /// create the further sessions).
    pub fn session_from_bytes(&self, model: &[u8], options: &SessionOptions) -> Result<OrtSession, OnnxError> {
        let source = if options.replicas > 1 { Some(ModelSource::Bytes(Arc::from(model))) } else { None };
        let (session, active, fallbacks) = self.commit(options, |b| b.commit_from_memory(model))?;
        Ok(OrtSession::new(self.clone(), source, options.clone(), session, active, fallbacks))
    }

    /// Creates a session from an `.onnx` file.
    pub fn session_from_file(&self, path: impl AsRef<Path>, options: &SessionOptions) -> Result<OrtSession, OnnxError> {
        let path = path.as_ref();
        let (session, active, fallbacks) = Self::with_path(path, self.commit_file(path, options))?;
        let source = Some(ModelSource::File(path.to_path_buf()));
        Ok(OrtSession::new(self.clone(), source, options.clone(), session, active, fallbacks))
    }

    fn with_path<T>(path: &Path, r: Result<T, OnnxError>) -> Result<T, OnnxError> {
        r.map_err(|e| match e {
            OnnxError::Runtime(msg) => OnnxError::Runtime(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    fn commit_file(&self, path: &Path, options: &SessionOptions) -> Result<Committed, OnnxError> {
        if !path.is_file() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
            return Err(OnnxError::Io { path: path.to_path_buf(), source });
        }
        self.commit(options, |b| b.commit_from_file(path))
    }

    fn commit(
        &self,
        options: &SessionOptions,
        f: impl FnOnce(&mut SessionBuilder) -> ort::Result<Session>,
    ) -> Result<Committed, OnnxError> {
        let (mut builder, active, fallbacks) = self.builder(options)?;
        let session = f(&mut builder).map_err(|e| OnnxError::Runtime(format!("cannot create a session: {e}")))?;
        Ok((session, active, fallbacks))
    }

    fn replica(&self, source: &ModelSource, options: &SessionOptions) -> Result<Session, OnnxError> {
        let quiet = SessionOptions { allow_fallback: true, ..options.clone() };
        Ok(match source {
            ModelSource::Bytes(b) => self.commit(&quiet, |s| s.commit_from_memory(b))?.0,
            ModelSource::File(p) => Self::with_path(p, self.commit_file(p, &quiet))?.0,
        })
    }

    fn builder(&self, options: &SessionOptions) -> Result<(SessionBuilder, Vec<String>, Vec<String>), OnnxError> {
        let rt = |what: &str, e: String| OnnxError::Runtime(format!("{what}: {e}"));
        let mut builder = Session::builder(&self.env).map_err(|e| rt("session builder", e.to_string()))?;
        builder =
            builder.with_optimization_level(GraphOptimizationLevel::Level3).map_err(|e| rt("graph optimisation level", e.to_string()))?;
        if options.intra_threads > 0 {
            builder = builder.with_intra_threads(options.intra_threads).map_err(|e| rt("intra-op threads", e.to_string()))?;
        }
        let mut active = Vec::new();
        let mut fallbacks = Vec::new();
        let providers = if options.providers.is_empty() { vec![ExecutionProvider::Cpu] } else { options.providers.clone() };
        for p in providers {
            let refusal = match p.is_available()? {
                false => Some("this ONNX Runtime build does not include it (the CPU wheel `onnxruntime` has no CUDA/TensorRT; install `onnxruntime-gpu`)".to_string()),
                true => match builder.with_execution_providers([p.dispatch()]) {
                    Ok(b) => {
                        builder = b;
                        active.push(p.ort_name().to_string());
                        None
                    }
                    Err(e) => {
                        let reason = format!("registration failed: {e}");
                        builder = e.recover();
                        Some(reason)
                    }
                },
            };
            if let Some(reason) = refusal {
                if !options.allow_fallback {
                    return Err(OnnxError::Provider { requested: p.ort_name().into(), reason, available: self.available_providers() });
                }
                fallbacks.push(format!("{} unavailable ({reason}); falling back", p.ort_name()));
            }
        }
        if !active.iter().any(|a| a == ort::ep::CPU::NAME) {
            active.push(ort::ep::CPU::NAME.to_string());
        }
        for note in &fallbacks {
            tracing::warn!("{note}; running on {}", active.join(", "));
        }
        tracing::info!("ONNX Runtime session: execution providers {active:?}");
        Ok((builder, active, fallbacks))
    }
}

/// A session plus the providers registered for it and the ones skipped.
type Committed = (Session, Vec<String>, Vec<String>);

/// Where further sessions of a pool are created from.
#[derive(Clone, Debug)]
enum ModelSource {
    Bytes(Arc<[u8]>),
    File(PathBuf),
}

/// The idle sessions of a pool and how many exist.
struct Pool {
    idle: Vec<Session>,
    created: usize,
}

/// A session checked out of the pool; returned on drop.
struct Lease<'a> {
    owner: &'a OrtSession,
    session: Option<Session>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let mut pool = self.owner.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.idle.push(s);
            drop(pool);
            self.owner.returned.notify_one();
        }
    }
}

/// One input tensor: a shape and row-major data.
#[derive(Clone, Copy, Debug)]
pub enum TensorInput<'a> {
    /// `float32`.
    F32(&'a [usize], &'a [f32]),
    /// `int64`.
    I64(&'a [usize], &'a [i64]),
    /// `uint8`.
    U8(&'a [usize], &'a [u8]),
}

/// One output tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorOutput {
    /// `float32` values and shape.
    F32(Vec<usize>, Vec<f32>),
    /// `int64` values and shape.
    I64(Vec<usize>, Vec<i64>),
}

impl TensorOutput {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::F32(s, _) | Self::I64(s, _) => s,
        }
    }
}

/// An ONNX Runtime model, usable from several threads: a pool of up to
/// [`SessionOptions::replicas`] sessions, so that many runs proceed at once (more callers wait).
pub struct OrtSession {
    runtime: OrtRuntime,
    source: Option<ModelSource>,
    options: SessionOptions,
    pool: Mutex<Pool>,
    returned: Condvar,
    metadata: HashMap<String, String>,
    inputs: Vec<String>,
    input_info: Vec<(Option<ElemType>, Vec<Option<usize>>)>,
    outputs: Vec<String>,
    active: Vec<String>,
    fallbacks: Vec<String>,
}

impl std::fmt::Debug for OrtSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtSession")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("active_providers", &self.active)
            .field("replicas", &self.options.replicas.max(1))
            .finish()
    }
}

fn shape_of(shape: &[i64]) -> Vec<usize> {
    shape.iter().map(|&d| d.max(0) as usize).collect()
}

impl OrtSession {
    fn new(
        runtime: OrtRuntime,
        source: Option<ModelSource>,
        options: SessionOptions,
        session: Session,
        active: Vec<String>,
        fallbacks: Vec<String>,
    ) -> Self {
        let metadata = session
            .metadata()
            .ok()
            .map(|m| {
                let keys = m.custom_keys().unwrap_or_default();
                keys.into_iter().filter_map(|k| m.custom(&k).map(|v| (k, v))).collect()
            })
            .unwrap_or_default();
        let inputs = session.inputs().iter().map(|o| o.name().to_string()).collect();
        let input_info = session
            .inputs()
            .iter()
            .map(|o| match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => {
                    let elem = match ty {
                        TensorElementType::Float32 => Some(ElemType::F32),
                        TensorElementType::Int64 => Some(ElemType::I64),
                        TensorElementType::Uint8 => Some(ElemType::U8),
                        TensorElementType::Bool => Some(ElemType::Bool),
                        _ => None,
                    };
                    (elem, shape.iter().map(|&d| usize::try_from(d).ok()).collect())
                }
                _ => (None, vec![]),
            })
            .collect();
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let pool = Mutex::new(Pool { idle: vec![session], created: 1 });
        Self { runtime, source, options, pool, returned: Condvar::new(), metadata, inputs, input_info, outputs, active, fallbacks }
    }

    /// A custom metadata value of the model (`idflow.model`, `idflow.config`, …).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The intra-op threads of each session (`0` = ONNX Runtime's default).
    pub fn intra_threads(&self) -> usize {
        self.options.intra_threads
    }

    /// The most sessions this pool holds (concurrent runs).
    pub fn replicas(&self) -> usize {
        self.options.replicas.max(1)
    }

    /// Sessions created so far (1 ..= [`OrtSession::replicas`]).
    pub fn sessions_created(&self) -> usize {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).created
    }

    /// Takes an idle session, creates one when fewer than `replicas` exist, else waits.
    fn checkout(&self) -> Result<Lease<'_>, OnnxError> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = pool.idle.pop() {
                return Ok(Lease { owner: self, session: Some(s) });
            }
            if let Some(source) = self.source.as_ref().filter(|_| pool.created < self.replicas()) {
                pool.created += 1;
                drop(pool);
                return match self.runtime.replica(source, &self.options) {
                    Ok(s) => Ok(Lease { owner: self, session: Some(s) }),
                    Err(e) => {
                        self.pool.lock().unwrap_or_else(|p| p.into_inner()).created -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            pool = self.returned.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Graph input names, in graph order.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    /// Element type of the graph input `name` (`None`: no such tensor input or another type).
    pub fn input_type(&self, name: &str) -> Option<ElemType> {
        let i = self.inputs.iter().position(|n| n == name)?;
        self.input_info[i].0
    }

    /// Dimensions of the graph input `name` (`None` entries are symbolic).
    pub fn input_dims(&self, name: &str) -> Option<Vec<Option<usize>>> {
        let i = self.inputs.iter().position(|n| n == name)?;
        Some(self.input_info[i].1.clone())
    }

    /// Graph output names, in graph order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Execution providers registered for this session, in priority order (CPU last).
    pub fn active_providers(&self) -> &[String] {
        &self.active
    }

    /// Providers that were asked for but skipped (only with [`SessionOptions::allow_fallback`]).
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// Runs the model on named inputs; returns every graph output by name, in graph order.
    pub fn run(&self, inputs: &[(&str, TensorInput<'_>)]) -> Result<Vec<(String, TensorOutput)>, OnnxError> {
        for (name, input) in inputs {
            let (shape, len) = match input {
                TensorInput::F32(s, d) => (*s, d.len()),
                TensorInput::I64(s, d) => (*s, d.len()),
                TensorInput::U8(s, d) => (*s, d.len()),
            };
            if shape.iter().product::<usize>() != len {
                return Err(OnnxError::Input {
                    name: (*name).into(),
                    reason: format!("shape {shape:?} needs {} values, got {len}", shape.iter().product::<usize>()),
                });
            }
            if !self.inputs.iter().any(|i| i == name) {
                return Err(OnnxError::Input {
                    name: (*name).into(),
                    reason: format!("the model has no such input (inputs: {:?})", self.inputs),
                });
            }
        }
        let rt = |e: ort::Error| OnnxError::Runtime(e.to_string());
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (name, input) in inputs {
            let v: SessionInputValue<'_> = match *input {
                TensorInput::F32(s, d) => TensorRef::from_array_view((s.to_vec(), d)).map_err(rt)?.into(),
                TensorInput::I64(s, d) => TensorRef::from_array_view((s.to_vec(), d)).map_err(rt)?.into(),
                TensorInput::U8(s, d) => TensorRef::from_array_view((s.to_vec(), d)).map_err(rt)?.into(),
            };
            values.push((Cow::Owned((*name).to_string()), v));
        }
        let mut lease = self.checkout()?;
        let session = lease.session.as_mut().ok_or_else(|| OnnxError::Runtime("session pool is empty".into()))?;
        let outputs = session.run(values).map_err(rt)?;
        let mut result = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let out = if let Ok((shape, data)) = value.try_extract_tensor::<f32>() {
                TensorOutput::F32(shape_of(shape), data.to_vec())
            } else if let Ok((shape, data)) = value.try_extract_tensor::<i64>() {
                TensorOutput::I64(shape_of(shape), data.to_vec())
            } else {
                return Err(OnnxError::Runtime(format!("output `{name}` is neither float32 nor int64")));
            };
            result.push((name.to_string(), out));
        }
        Ok(result)
    }

    /// Runs the model and returns the float32 output `name` (shape, values).
    pub fn run_f32(&self, inputs: &[(&str, TensorInput<'_>)], name: &str) -> Result<(Vec<usize>, Vec<f32>), OnnxError> {
        let outputs = self.run(inputs)?;
        match outputs.into_iter().find(|(n, _)| n == name) {
            Some((_, TensorOutput::F32(s, d))) => Ok((s, d)),
            Some(_) => Err(OnnxError::Runtime(format!("output `{name}` is not float32"))),
            None => Err(OnnxError::Runtime(format!("the model has no output `{name}` (outputs: {:?})", self.outputs))),
        }
    }
}
