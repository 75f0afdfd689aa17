//! Architecture JSON against the memory budget: whatever a spec declares, building it
//! either fails or gives a network whose training step (forward and backward on a batch)
//! and inference pass allocate no more than `Network::values_per_example` promises.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;

/// Counts live heap bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Steps whose promised memory is above this are only built, not run (fuzzing speed).
const RUN_LIMIT: usize = 64 << 20;
const BATCH: usize = 2;
/// Memory a step may take whatever the network (see the slack below).
const FIXED: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = nn::ModelSpec::from_json(text) else {
        return;
    };
    let before = LIVE.load(Relaxed);
    let Ok(mut net) = spec.build(&mut nn::Rng::new(0)) else {
        // A refused spec allocated no weights: at most the small structures built
        // before the error.
        assert!(PEAK.load(Relaxed) < before + (512 << 20));
        return;
    };
    let params = net.num_params();
    assert!(params <= nn::MAX_PARAMS);
    let values = net.values_per_example();
    assert!(values <= nn::MAX_VALUES_PER_EXAMPLE);
    let promised = 4 * BATCH * values;
    if promised > RUN_LIMIT {
        return;
    }
    let n: usize = spec.input.iter().product();
    let shape = [[BATCH].as_slice(), &spec.input].concat();
    let Ok(x) = nn::Tensor::from_vec(&shape, vec![0.5; BATCH * n]) else {
        return;
    };
    let start = LIVE.load(Relaxed);
    PEAK.store(start, Relaxed);
    let out = net.forward(&x, nn::Mode::Train, &mut nn::Rng::new(1)).clone();
    let dy = nn::Tensor::from_vec(out.shape(), vec![0.01; out.len()]).unwrap();
    net.backward(&x, &dy, None);
    let _ = net.forward(&x, nn::Mode::Eval, &mut nn::Rng::new(1));
    // Beyond the promised activations: inference copies of the weights (folded batch
    // norm, Winograd-transformed: a few times the weights), the output copy and dy
    // here, small per-layer vectors, and a fixed amount that does not grow with the
    // network: gemm's packing buffers and rayon's first start (the training budget's
    // 64 MiB of fixed room covers them).
    let slack = 16 * 4 * params
        + 2 * 4 * out.len()
        + 64 * 1024 * (net.layers_len() + 1)
        + FIXED;
    let used = PEAK.load(Relaxed) - start;
    assert!(
        used <= promised + slack,
        "a step used {used} bytes; promised {promised} for activations, {slack} slack"
    );
});
