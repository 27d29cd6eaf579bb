//! Progress display: one bar per node (rows, rows/s, ETA when the total is known) on a
//! terminal; plain log lines every few seconds when stderr is not a terminal.

use crate::report::NodeStats;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running progress display; stop it with [`Progress::finish`].
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts the display thread for `nodes` (id, op, stats).
    pub fn start(nodes: Vec<(String, String, Arc<NodeStats>)>, enabled: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Self { stop, handle: None };
        }
        let flag = stop.clone();
        let tty = std::io::stderr().is_terminal();
        let handle = std::thread::spawn(move || if tty { bars(nodes, flag) } else { lines(nodes, flag) });
        Self { stop, handle: Some(handle) }
    }

    /// Stops the display (draws the last state).
    pub fn finish(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn bars(nodes: Vec<(String, String, Arc<NodeStats>)>, stop: Arc<AtomicBool>) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    let width = nodes.iter().map(|n| n.0.len()).max().unwrap_or(4);
    let with_len =
        ProgressStyle::with_template(&format!("{{prefix:<{width}}} [{{bar:30}}] {{human_pos}}/{{human_len}} rows {{per_sec}} eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let without = ProgressStyle::with_template(&format!("{{prefix:<{width}}} {{spinner}} {{human_pos}} rows {{per_sec}}"))
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let pbs: Vec<ProgressBar> = nodes
        .iter()
        .map(|(id, _, _)| {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(without.clone());
            pb.set_prefix(id.clone());
            pb
        })
        .collect();
    loop {
        let done = stop.load(Relaxed);
        for ((_, _, st), pb) in nodes.iter().zip(&pbs) {
            if st.expected_known.load(Relaxed) && pb.length().is_none() {
                pb.set_style(with_len.clone());
                pb.set_length(st.expected_rows.load(Relaxed));
            }
            pb.set_position(st.rows_out.load(Relaxed).max(st.rows_in.load(Relaxed)));
        }
        if done {
            for pb in &pbs {
                pb.finish();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(nodes: Vec<(String, String, Arc<NodeStats>)>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut last = Instant::now();
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < Duration::from_secs(5) {
            continue;
        }
        last = Instant::now();
        let secs = start.elapsed().as_secs_f64();
        for (id, op, st) in &nodes {
            let rows = st.rows_out.load(Relaxed).max(st.rows_in.load(Relaxed));
            tracing::info!("{id} ({op}): {rows} rows, {:.0} rows/s", rows as f64 / secs.max(1e-9));
        }
    }
}
