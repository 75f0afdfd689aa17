//! Gaussian mixtures of colours, fitted by k-means and hard assignment as GrabCut does.

/// A colour as three floats (0–255 each).
pub type Colour = [f32; 3];

/// Added to each covariance's diagonal: the noise of 8-bit pixels and of JPEG, so that a
/// flat region does not make a component infinitely sure of itself.
const NOISE_VARIANCE: f32 = 9.0;

/// One component: its weight folded into `log_norm`.
#[derive(Clone, Debug)]
struct Component {
    mean: Colour,
    /// The inverse covariance.
    inv: [[f32; 3]; 3],
    /// ln(weight) − ½ ln det Σ − (3/2) ln 2π.
    log_norm: f32,
}

/// A mixture of up to `k` Gaussian components.
#[derive(Clone, Debug)]
pub struct Mixture {
    comps: Vec<Component>,
}

fn dist2(a: &Colour, b: &Colour) -> f32 {
    (0..3).map(|i| (a[i] - b[i]) * (a[i] - b[i])).sum()
}

impl Mixture {
    /// Fits `k` components to `samples` by k-means (started from the colours farthest
    /// from those chosen so far, so the fit is deterministic), or `None` with no samples.
    pub fn fit(samples: &[Colour], k: usize) -> Option<Self> {
        let first = *samples.first()?;
        let mut centres = vec![first];
        let mut nearest: Vec<f32> = samples.iter().map(|s| dist2(s, &first)).collect();
        while centres.len() < k {
            let (i, &d) = nearest
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))?;
            if d < 1.0 {
                break;
            }
            let c = samples[i];
            centres.push(c);
            for (n, s) in nearest.iter_mut().zip(samples) {
                *n = n.min(dist2(s, &c));
            }
        }
        let mut assign = vec![0usize; samples.len()];
        for _ in 0..6 {
            for (a, s) in assign.iter_mut().zip(samples) {
                *a = nearest_centre(&centres, s);
            }
            let mut sums = vec![([0f64; 3], 0usize); centres.len()];
            for (&a, s) in assign.iter().zip(samples) {
                for (sum, &v) in sums[a].0.iter_mut().zip(s) {
                    *sum += v as f64;
                }
                sums[a].1 += 1;
            }
            for (c, (sum, n)) in centres.iter_mut().zip(&sums) {
                if *n > 0 {
                    *c = sum.map(|v| (v / *n as f64) as f32);
                }
            }
        }
        Self::from_assignment(samples, &assign, centres.len())
    }

    /// Refits the components to `samples`, each given to the component most likely to
    /// have drawn it.
    pub fn refit(&self, samples: &[Colour]) -> Option<Self> {
        let assign: Vec<usize> = samples.iter().map(|s| self.best(s)).collect();
        Self::from_assignment(samples, &assign, self.comps.len())
    }

    fn from_assignment(samples: &[Colour], assign: &[usize], k: usize) -> Option<Self> {
        let mut stats = vec![(0usize, [0f64; 3], [[0f64; 3]; 3]); k];
        for (&a, s) in assign.iter().zip(samples) {
            let (n, sum, prod) = &mut stats[a];
            *n += 1;
            for i in 0..3 {
                sum[i] += s[i] as f64;
                for j in 0..3 {
                    prod[i][j] += s[i] as f64 * s[j] as f64;
                }
            }
        }
        let total = samples.len() as f64;
        let comps: Vec<Component> = stats
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, sum, prod)| {
                let n = *n as f64;
                let mean = sum.map(|v| v / n);
                let mut cov = [[0f64; 3]; 3];
                for i in 0..3 {
                    for j in 0..3 {
                        cov[i][j] = prod[i][j] / n - mean[i] * mean[j];
                    }
                    cov[i][i] += NOISE_VARIANCE as f64;
                }
                let (inv, det) = invert(&cov);
                Component {
                    mean: mean.map(|v| v as f32),
                    inv: inv.map(|r| r.map(|v| v as f32)),
                    log_norm: ((n / total).ln()
                        - 0.5 * det.ln()
                        - 1.5 * (2.0 * std::f64::consts::PI).ln())
                        as f32,
                }
            })
            .collect();
        (!comps.is_empty()).then_some(Self { comps })
    }

    fn log_density(c: &Component, x: &Colour) -> f32 {
        let d = [x[0] - c.mean[0], x[1] - c.mean[1], x[2] - c.mean[2]];
        let mut q = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                q += d[i] * c.inv[i][j] * d[j];
            }
        }
        c.log_norm - 0.5 * q
    }

    fn best(&self, x: &Colour) -> usize {
        let mut best = (0, f32::NEG_INFINITY);
        for (i, c) in self.comps.iter().enumerate() {
            let l = Self::log_density(c, x);
            if l > best.1 {
                best = (i, l);
            }
        }
        best.0
    }

    /// −ln p(x): the cost of saying `x` was drawn from this mixture.
    pub fn cost(&self, x: &Colour) -> f32 {
        let logs: Vec<f32> = self.comps.iter().map(|c| Self::log_density(c, x)).collect();
        let max = logs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = logs.iter().map(|l| (l - max).exp()).sum();
        -(max + sum.ln())
    }
}

fn nearest_centre(centres: &[Colour], s: &Colour) -> usize {
    let mut best = (0, f32::INFINITY);
    for (i, c) in centres.iter().enumerate() {
        let d = dist2(s, c);
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// The inverse and determinant of a symmetric positive-definite 3×3 matrix.
fn invert(m: &[[f64; 3]; 3]) -> ([[f64; 3]; 3], f64) {
    let c = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let det = m[0][0] * c(0, 0) + m[0][1] * c(0, 1) + m[0][2] * c(0, 2);
    let mut inv = [[0f64; 3]; 3];
    for (i, row) in inv.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = c(j, i) / det;
        }
    }
    (inv, det)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_matrix_is_identity() {
        let m = [[5.0, 1.0, 0.5], [1.0, 4.0, 0.2], [0.5, 0.2, 3.0]];
        let (inv, det) = invert(&m);
        assert!((det - 56.0).abs() < 1e-9, "{det}");
        for (i, row) in m.iter().enumerate() {
            for j in 0..3 {
                let v: f64 = row.iter().zip(&inv).map(|(a, r)| a * r[j]).sum();
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn each_colour_costs_least_under_the_mixture_of_its_own_kind() {
        let reds: Vec<Colour> = (0..50)
            .map(|i| [200.0 + (i % 7) as f32, 30.0 + (i % 5) as f32, 20.0])
            .collect();
        let blues: Vec<Colour> = (0..50)
            .map(|i| [10.0, 40.0 + (i % 3) as f32, 180.0 + (i % 9) as f32])
            .collect();
        let both: Vec<Colour> = reds.iter().chain(&blues).copied().collect();
        let (red, blue) = (
            Mixture::fit(&reds, 3).unwrap(),
            Mixture::fit(&blues, 3).unwrap(),
        );
        for c in &reds {
            assert!(red.cost(c) < blue.cost(c));
        }
        for c in &blues {
            assert!(blue.cost(c) < red.cost(c));
        }
        // Two clusters fitted by two components: each centre lands on one.
        let two = Mixture::fit(&both, 2).unwrap();
        let mut means: Vec<f32> = two.comps.iter().map(|c| c.mean[0]).collect();
        means.sort_by(f32::total_cmp);
        assert!((means[0] - 10.0).abs() < 1.0 && (means[1] - 203.0).abs() < 1.0);
        assert!(Mixture::fit(&[], 3).is_none());
    }
}
