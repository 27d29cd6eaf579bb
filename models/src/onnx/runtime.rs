//! ONNX Runtime through the `ort` crate, with the shared library loaded at run time.
//!
//! The library comes from the PyPI wheel `onnxruntime==1.32.0`
//! (`onnxruntime/capi/libonnxruntime.so.1.32.0`; the repository's `tests/py/ort_env.sh` installs it
//! and prints the path). [`OrtRuntime::new`] takes that path or reads `ORT_DYLIB_PATH`; a missing
//! library is an [`OnnxError::RuntimeMissing`] that says how to get it — never a panic (`ort::init()`
//! would panic lazily, so `ort::init_from` is used).
//!
//! ONNX Runtime allows one environment per process: the first successful [`OrtRuntime::new`]
//! creates it, later calls share it (and must name the same library).
//!
//! Sessions use graph optimisation level 3 (layout optimisations included), a given number of
//! intra-op threads, and execution providers in the order asked for. A provider the library does
//! not offer (CUDA with the CPU wheel) is an error, or — with [`SessionOptions::allow_fallback`] —
//! a logged fallback recorded in [`OrtSession::fallbacks`]; [`OrtSession::active_providers`] names
//! the providers actually registered.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::ep::ExecutionProvider as _;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::builder::ElemType;
use super::OnnxError;

/// How to obtain the ONNX Runtime library, quoted by [`OnnxError::RuntimeMissing`].
pub const RUNTIME_HINT: &str = "Install it with `pip install onnxruntime==1.32.0` (or run `bash tests/py/ort_env.sh` in the idflow repository, which creates a venv and prints the path) and set ORT_DYLIB_PATH to the absolute path of onnxruntime/capi/libonnxruntime.so.1.32.0";

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
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { intra_threads: 0, providers: vec![ExecutionProvider::Cpu], allow_fallback: false }
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
    /// Loads ONNX Runtime from `dylib`, or from `ORT_DYLIB_PATH` when `None`.
    pub fn new(dylib: Option<&Path>) -> Result<Self, OnnxError> {
        let path = match dylib {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os("ORT_DYLIB_PATH") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    return Err(OnnxError::RuntimeMissing {
                        reason: "no library path given and ORT_DYLIB_PATH is not set".into(),
                        hint: RUNTIME_HINT,
                    })
                }
            },
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

    /// Creates a session from serialised model bytes.
    pub fn session_from_bytes(&self, model: &[u8], options: &SessionOptions) -> Result<OrtSession, OnnxError> {
        let (builder, active, fallbacks) = self.builder(options)?;
        let mut builder = builder;
        let session = builder.commit_from_memory(model).map_err(|e| OnnxError::Runtime(format!("cannot create a session: {e}")))?;
        Ok(OrtSession::new(session, active, fallbacks))
    }

    /// Creates a session from an `.onnx` file.
    pub fn session_from_file(&self, path: impl AsRef<Path>, options: &SessionOptions) -> Result<OrtSession, OnnxError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.to_path_buf(), source })?;
        self.session_from_bytes(&bytes, options).map_err(|e| match e {
            OnnxError::Runtime(msg) => OnnxError::Runtime(format!("{}: {msg}", path.display())),
            other => other,
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
                let note = format!("{} unavailable ({reason}); falling back", p.ort_name());
                tracing::warn!("{note}");
                fallbacks.push(note);
            }
        }
        if !active.iter().any(|a| a == ort::ep::CPU::NAME) {
            active.push(ort::ep::CPU::NAME.to_string());
        }
        tracing::info!("ONNX Runtime session: execution providers {active:?}");
        Ok((builder, active, fallbacks))
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

/// An ONNX Runtime session, usable from several threads (runs are serialised).
pub struct OrtSession {
    session: Mutex<Session>,
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
            .finish()
    }
}

fn shape_of(shape: &[i64]) -> Vec<usize> {
    shape.iter().map(|&d| d.max(0) as usize).collect()
}

impl OrtSession {
    fn new(session: Session, active: Vec<String>, fallbacks: Vec<String>) -> Self {
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
        Self { session: Mutex::new(session), inputs, input_info, outputs, active, fallbacks }
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
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
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
