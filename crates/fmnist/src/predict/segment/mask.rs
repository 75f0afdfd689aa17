//! A binary object mask and the clean-ups a graph cut's labels need.

use std::collections::VecDeque;

/// The eight neighbours of a pixel.
const NEIGHBOURS: [(i64, i64); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

/// Which pixels of a `w × h` image belong to the object, row by row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
    /// One flag a pixel, row by row.
    pub on: Vec<bool>,
}

/// Smallest share of the image an object may cover: below it the cut found a speck.
const MIN_SHARE: f64 = 0.01;
/// Largest share: above it the cut took the background too.
const MAX_SHARE: f64 = 0.95;

impl Mask {
    /// A mask of `w × h` flags.
    pub fn new(w: u32, h: u32, on: Vec<bool>) -> Self {
        debug_assert_eq!(on.len(), (w * h) as usize);
        Self { w, h, on }
    }

    fn get(&self, x: i64, y: i64) -> bool {
        x >= 0
            && y >= 0
            && x < self.w as i64
            && y < self.h as i64
            && self.on[(y * self.w as i64 + x) as usize]
    }

    /// The indices of pixel `i`'s eight neighbours inside the image.
    fn neighbours(&self, i: usize) -> impl Iterator<Item = usize> + use<> {
        let (w, h) = (self.w as i64, self.h as i64);
        let (x, y) = (i as i64 % w, i as i64 / w);
        NEIGHBOURS.into_iter().filter_map(move |(dx, dy)| {
            let (nx, ny) = (x + dx, y + dy);
            (nx >= 0 && ny >= 0 && nx < w && ny < h).then(|| (ny * w + nx) as usize)
        })
    }

    /// Pixels set.
    pub fn area(&self) -> usize {
        self.on.iter().filter(|&&o| o).count()
    }

    /// The mask after thin parts are opened away, only its largest 8-connected piece kept
    /// and its holes filled; `None` when what is left is a speck or nearly everything.
    pub fn cleaned(self) -> Option<Self> {
        let radius = (self.w.min(self.h) / 48).max(1) as i64;
        let opened = self.eroded(radius).dilated(radius);
        let kept = opened.largest_piece().filled();
        let share = kept.area() as f64 / kept.on.len() as f64;
        (MIN_SHARE..=MAX_SHARE).contains(&share).then_some(kept)
    }

    /// Pixels whose whole `(2r+1)²` square is set.
    fn eroded(&self, r: i64) -> Self {
        self.morph(r, true)
    }

    /// Pixels whose `(2r+1)²` square holds any set pixel.
    fn dilated(&self, r: i64) -> Self {
        self.morph(r, false)
    }

    fn morph(&self, r: i64, all: bool) -> Self {
        // Separable: rows first, then columns. Outside the image counts as unset.
        let (w, h) = (self.w as i64, self.h as i64);
        let pass = |src: &dyn Fn(i64, i64) -> bool, horizontal: bool| -> Vec<bool> {
            (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .map(|(x, y)| {
                    let mut it = (-r..=r).map(|d| {
                        if horizontal {
                            src(x + d, y)
                        } else {
                            src(x, y + d)
                        }
                    });
                    if all { it.all(|v| v) } else { it.any(|v| v) }
                })
                .collect()
        };
        let rows = pass(&|x, y| self.get(x, y), true);
        let rows = Self::new(self.w, self.h, rows);
        let both = pass(&|x, y| rows.get(x, y), false);
        Self::new(self.w, self.h, both)
    }

    /// Labels of the 8-connected pieces (0 for unset pixels) and each piece's size.
    fn pieces(&self) -> (Vec<u32>, Vec<usize>) {
        let mut label = vec![0u32; self.on.len()];
        let mut sizes = vec![0usize];
        let mut stack = Vec::new();
        for start in 0..self.on.len() {
            if !self.on[start] || label[start] != 0 {
                continue;
            }
            let id = sizes.len() as u32;
            sizes.push(0);
            label[start] = id;
            stack.push(start);
            while let Some(i) = stack.pop() {
                sizes[id as usize] += 1;
                for j in self.neighbours(i) {
                    if self.on[j] && label[j] == 0 {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        (label, sizes)
    }

    /// Only the largest piece (the first of equal ones, in reading order).
    fn largest_piece(&self) -> Self {
        let (label, sizes) = self.pieces();
        let best = (1..sizes.len())
            .max_by(|&a, &b| sizes[a].cmp(&sizes[b]).then(b.cmp(&a)))
            .unwrap_or(0) as u32;
        let on = label.iter().map(|&l| l != 0 && l == best).collect();
        Self::new(self.w, self.h, on)
    }

    /// Unset pixels that no 4-connected path of unset pixels joins to the border are set.
    fn filled(&self) -> Self {
        let (w, h) = (self.w as usize, self.h as usize);
        let mut outside = vec![false; self.on.len()];
        let mut stack: Vec<usize> = (0..w)
            .flat_map(|x| [x, (h - 1) * w + x])
            .chain((0..h).flat_map(|y| [y * w, y * w + w - 1]))
            .filter(|&i| !self.on[i])
            .collect();
        for &i in &stack {
            outside[i] = true;
        }
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if !self.on[j] && !outside[j] {
                    outside[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        Self::new(self.w, self.h, outside.iter().map(|&o| !o).collect())
    }

    /// When the mask is two pieces of about one size joined by a narrow neck (a pair of
    /// shoes side by side), the larger piece alone. Erodes step by step until the mask
    /// falls apart or has mostly gone; the two pieces it falls into are grown back
    /// inside it, each pixel going to the piece that reaches it first.
    pub fn one_of_pair(&self) -> Option<Self> {
        let area = self.area();
        let mut eroded = self.clone();
        for _ in 0..self.w.min(self.h) / 6 {
            eroded = eroded.eroded(1);
            let rest = eroded.area();
            if rest * 5 < area {
                return None;
            }
            let (label, sizes) = eroded.pieces();
            let mut order: Vec<usize> = (1..sizes.len()).collect();
            order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
            if let [a, b, ..] = order[..] {
                // Two pieces of comparable size holding nearly all that is left; not a
                // speck broken off one body.
                if sizes[b] * 2 >= sizes[a] && (sizes[a] + sizes[b]) * 10 >= rest * 9 {
                    return Some(self.grown_from(&label, a as u32, b as u32));
                }
            }
        }
        None
    }

    /// When the mask is a pair lying side by side and touching along its length (two
    /// shoes seen from above, which erosion cannot part), the larger half, cut along
    /// the line they touch on. That line is found as the one, along either axis of the
    /// mask and through its middle half, notched at both ends, between two halves of
    /// about one area, each at least twice as long as wide: the outline dips in
    /// between the toes and again between the heels. A single garment has at most one
    /// such notch (trousers between the legs, a top at the neck), and no half of it is
    /// that long and narrow.
    pub fn half_of_touching_pair(&self) -> Option<Self> {
        self.half_along_notches(Notches::Both)
    }

    /// The larger half of the mask cut as [`Self::half_of_touching_pair`] cuts it, where
    /// the line is notched at one end at least: a pair pressed together at the heels or
    /// the toes, or a garment with one notch (trousers between the legs).
    pub fn half_of_possible_pair(&self) -> Option<Self> {
        self.half_along_notches(Notches::One)
    }

    /// The larger half along the best line with `notches` that parts the mask into two
    /// long halves of about one area.
    fn half_along_notches(&self, notches: Notches) -> Option<Self> {
        let points: Vec<(f64, f64)> = (0..self.on.len())
            .filter(|&i| self.on[i])
            .map(|i| ((i as u32 % self.w) as f64, (i as u32 / self.w) as f64))
            .collect();
        if points.len() < 64 {
            return None;
        }
        let (angle, _) = self.long_axis();
        let mut best: Option<(f64, Cut)> = None;
        for along in [angle, angle + std::f64::consts::FRAC_PI_2] {
            if let Some((depth, cut)) = notched_cut(&points, along, notches)
                && best.as_ref().is_none_or(|(d, _)| depth > *d)
            {
                best = Some((depth, cut));
            }
        }
        let (_, cut) = best?;
        let (c, s) = (cut.along.cos(), cut.along.sin());
        let on = (0..self.on.len())
            .map(|i| {
                let (x, y) = ((i as u32 % self.w) as f64, (i as u32 / self.w) as f64);
                self.on[i] && cut.before((y * c - x * s - cut.v0) as i64) == Some(cut.keep_before)
            })
            .collect();
        Some(Self::new(self.w, self.h, on).largest_piece())
    }

    /// The pixels of this mask nearer (along it, 8-connected) to the pixels labelled
    /// `keep` than to those labelled `other`.
    fn grown_from(&self, label: &[u32], keep: u32, other: u32) -> Self {
        let mut owner: Vec<u32> = label
            .iter()
            .map(|&l| if l == keep || l == other { l } else { 0 })
            .collect();
        let mut queue: VecDeque<usize> = (0..owner.len()).filter(|&i| owner[i] != 0).collect();
        while let Some(i) = queue.pop_front() {
            for j in self.neighbours(i) {
                if self.on[j] && owner[j] == 0 {
                    owner[j] = owner[i];
                    queue.push_back(j);
                }
            }
        }
        Self::new(self.w, self.h, owner.iter().map(|&o| o == keep).collect())
    }

    /// The angle (radians, from the x axis, in (−π/2, π/2]) of the mask's long axis, and
    /// how many times longer than wide it is (from its second moments).
    pub fn long_axis(&self) -> (f64, f64) {
        let (mut n, mut sx, mut sy) = (0f64, 0f64, 0f64);
        for (i, _) in self.on.iter().enumerate().filter(|(_, o)| **o) {
            n += 1.0;
            sx += (i as u32 % self.w) as f64;
            sy += (i as u32 / self.w) as f64;
        }
        if n == 0.0 {
            return (0.0, 1.0);
        }
        let (mx, my) = (sx / n, sy / n);
        let (mut xx, mut yy, mut xy) = (0f64, 0f64, 0f64);
        for (i, _) in self.on.iter().enumerate().filter(|(_, o)| **o) {
            let dx = (i as u32 % self.w) as f64 - mx;
            let dy = (i as u32 / self.w) as f64 - my;
            xx += dx * dx;
            yy += dy * dy;
            xy += dx * dy;
        }
        let angle = 0.5 * (2.0 * xy).atan2(xx - yy);
        let spread = ((xx - yy).powi(2) + 4.0 * xy * xy).sqrt();
        let (long, short) = (
            (xx + yy + spread) / 2.0,
            ((xx + yy - spread) / 2.0).max(1e-9),
        );
        (angle, (long / short).sqrt())
    }

    /// The bounding box `(x, y, w, h)` of the set pixels, or `None` when none are.
    pub fn bounds(&self) -> Option<(u32, u32, u32, u32)> {
        let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
        for (i, _) in self.on.iter().enumerate().filter(|(_, o)| **o) {
            let (x, y) = (i as u32 % self.w, i as u32 / self.w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
        (x0 <= x1).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
    }
}

/// Smallest notch, at each end of the line a touching pair is cut along, as a share of
/// the mask's length along that line.
const PAIR_NOTCH: f64 = 0.1;
/// Smallest area of the smaller half against the larger one, for a pair.
const PAIR_BALANCE: f64 = 0.6;
/// Smallest ratio of each half's length to its width, for a pair: a shoe seen from
/// above is 2.5–3 times longer than wide, half a top or a bag is not twice.
const PAIR_ELONGATION: f64 = 2.0;

/// Which ends of a line that parts a pair must be notched.
#[derive(Clone, Copy)]
enum Notches {
    /// Both: the outline dips between the toes and between the heels.
    Both,
    /// One at least.
    One,
}

/// A line cutting a mask in two: along `along` (radians), on bin `cut` of the
/// coordinate across it, counted from `v0` in steps of one pixel.
struct Cut {
    along: f64,
    v0: f64,
    cut: i64,
    /// Whether the half kept is the one before the cut.
    keep_before: bool,
}

impl Cut {
    /// Whether bin `b` lies before the cut (`Some(true)`), after it, or on it (`None`).
    fn before(&self, b: i64) -> Option<bool> {
        (b != self.cut).then_some(b < self.cut)
    }
}

/// The best line along `along` that parts `points` into a touching pair (see
/// [`Mask::half_of_touching_pair`]) with `notches`, and the depth of the shallower of
/// its two notches (of the deeper, for [`Notches::One`]) as a share of the length, if
/// one qualifies.
fn notched_cut(points: &[(f64, f64)], along: f64, notches: Notches) -> Option<(f64, Cut)> {
    let (c, s) = (along.cos(), along.sin());
    // u runs along the line, v across it.
    let uv: Vec<(f64, f64)> = points
        .iter()
        .map(|&(x, y)| (x * c + y * s, y * c - x * s))
        .collect();
    let v0 = uv.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let bins = uv.iter().map(|p| (p.1 - v0) as usize).max()? + 1;
    // Per bin across the line: how far the mask reaches each way along it, and its area.
    let (mut front, mut back, mut area) = (
        vec![f64::NEG_INFINITY; bins],
        vec![f64::NEG_INFINITY; bins],
        vec![0usize; bins],
    );
    for &(u, v) in &uv {
        let b = (v - v0) as usize;
        front[b] = front[b].max(-u);
        back[b] = back[b].max(u);
        area[b] += 1;
    }
    // The farthest reach over the bins before each bin, and over those from it on.
    let reach = |ends: &[f64]| -> (Vec<f64>, Vec<f64>) {
        let mut before = vec![f64::NEG_INFINITY; bins + 1];
        let mut from = vec![f64::NEG_INFINITY; bins + 1];
        for b in 0..bins {
            before[b + 1] = before[b].max(ends[b]);
        }
        for b in (0..bins).rev() {
            from[b] = from[b + 1].max(ends[b]);
        }
        (before, from)
    };
    let ((front_before, front_from), (back_before, back_from)) = (reach(&front), reach(&back));
    let length = front_before[bins] + back_before[bins];
    let (total, mut seen) = (uv.len(), 0usize);
    let mut best: Option<(f64, Cut)> = None;
    for b in 0..bins {
        let (before, after) = (seen, total - seen - area[b]);
        seen += area[b];
        if b < bins / 4 || b >= bins - bins / 4 || area[b] == 0 {
            continue;
        }
        let notch = |ends: &[f64], pre: &[f64], post: &[f64]| pre[b].min(post[b + 1]) - ends[b];
        let (front_notch, back_notch) = (
            notch(&front, &front_before, &front_from),
            notch(&back, &back_before, &back_from),
        );
        let depth = match notches {
            Notches::Both => front_notch.min(back_notch),
            Notches::One => front_notch.max(back_notch),
        } / length;
        let balanced = before.min(after) as f64 >= PAIR_BALANCE * before.max(after) as f64;
        let elongated = front_before[b] + back_before[b] >= PAIR_ELONGATION * b as f64
            && front_from[b + 1] + back_from[b + 1] >= PAIR_ELONGATION * (bins - b - 1) as f64;
        if depth >= PAIR_NOTCH
            && balanced
            && elongated
            && best.as_ref().is_none_or(|(d, _)| depth > *d)
        {
            let cut = Cut {
                along,
                v0,
                cut: b as i64,
                keep_before: before >= after,
            };
            best = Some((depth, cut));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 24×32 mask from a test of each pixel.
    fn drawn(on: impl Fn(f64, f64) -> bool) -> Mask {
        Mask::new(
            24,
            32,
            (0..24 * 32)
                .map(|i| on((i % 24) as f64, (i / 24) as f64))
                .collect(),
        )
    }

    #[test]
    fn a_touching_pair_is_cut_and_trousers_and_tops_are_not() {
        // Two 7×13-radius ellipses side by side, touching along their length.
        let shoe =
            |x: f64, y: f64, cx: f64| ((x - cx) / 5.5).powi(2) + ((y - 16.0) / 13.0).powi(2) <= 1.0;
        let pair = drawn(|x, y| shoe(x, y, 6.5) || shoe(x, y, 16.5));
        let one = pair.half_of_touching_pair().expect("a pair");
        let (x, _, w, h) = one.bounds().unwrap();
        assert!(x + w <= 13 && h >= 25, "the left shoe: {x}+{w}, {h} tall");
        assert!(one.area() * 2 <= pair.area() && one.area() * 5 >= pair.area() * 2);
        // The same outline on its side is found along the other axis.
        let turned = Mask::new(
            32,
            24,
            (0..32 * 24)
                .map(|i| pair.on[(i % 32) * 24 + i / 32])
                .collect(),
        );
        assert!(turned.half_of_touching_pair().is_some());
        // Trousers: two legs apart at the bottom, joined by the waist; a notch at one end.
        let trousers = drawn(|x, y| {
            (3.0..21.0).contains(&x)
                && (2.0..30.0).contains(&y)
                && (y < 12.0 || !(10.0..14.0).contains(&x))
        });
        assert_eq!(trousers.half_of_touching_pair(), None);
        // A top: sleeves out, a neck notch at the top, the hem straight.
        let top = drawn(|x, y| {
            let body = (5.0..19.0).contains(&x) && (3.0..30.0).contains(&y);
            let sleeves = (1.0..23.0).contains(&x) && (3.0..11.0).contains(&y);
            let neck = (9.0..15.0).contains(&x) && y < 6.0;
            (body || sleeves) && !neck
        });
        assert_eq!(top.half_of_touching_pair(), None);
        // The pair pressed together at the heels: notched between the toes only. Not
        // certainly a pair, but possibly one, cut in the same place.
        let pressed = drawn(|x, y| {
            (shoe(x, y, 6.5) || shoe(x, y, 16.5) || ((6.5..16.5).contains(&x) && y >= 16.0))
                && y <= 29.0
        });
        assert_eq!(pressed.half_of_touching_pair(), None);
        let half = pressed.half_of_possible_pair().expect("a possible pair");
        let (x, _, w, h) = half.bounds().unwrap();
        assert!(
            (x + w <= 13 || x >= 11) && w <= 12 && h >= 24,
            "one shoe: {x}+{w}, {h} tall"
        );
        // Trousers are a possible pair too (only the model tells a leg from a shoe).
        assert!(trousers.half_of_possible_pair().is_some());
        // One shoe alone, or a bag's block, has no notch.
        assert_eq!(drawn(|x, y| shoe(x, y, 11.5)).half_of_possible_pair(), None);
        let block = drawn(|x, y| (2.0..22.0).contains(&x) && (8.0..26.0).contains(&y));
        assert_eq!(block.half_of_possible_pair(), None);
    }

    fn from_rows(rows: &[&str]) -> Mask {
        let w = rows[0].len() as u32;
        let on = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        Mask::new(w, rows.len() as u32, on)
    }

    #[test]
    fn opening_drops_thin_lines_and_keeps_the_body() {
        let m = from_rows(&[
            "..........",
            "....#.....",
            "....#.....",
            "..######..",
            "..######..",
            "..######..",
            "..######..",
            "..........",
        ]);
        let opened = m.eroded(1).dilated(1);
        assert!(!opened.get(4, 1) && !opened.get(4, 2));
        assert!(opened.get(2, 3) && opened.get(7, 6));
        assert_eq!(opened.area(), 24);
    }

    #[test]
    fn the_largest_piece_is_kept_and_its_holes_filled() {
        let m = from_rows(&[
            "##........",
            "##..#####.",
            "....#...#.",
            "....#...#.",
            "....#####.",
            "..........",
        ]);
        let kept = m.largest_piece();
        assert!(!kept.get(0, 0));
        assert_eq!(kept.area(), 14);
        let filled = kept.filled();
        assert_eq!(filled.area(), 20);
        assert_eq!(filled.bounds(), Some((4, 1, 5, 4)));
        let empty = Mask::new(3, 3, vec![false; 9]);
        assert_eq!(empty.long_axis(), (0.0, 1.0));
        assert_eq!(empty.bounds(), None);
        assert_eq!(empty.cleaned(), None);
    }

    #[test]
    fn a_pair_joined_by_a_neck_is_split_and_one_body_is_not() {
        let pair = from_rows(&[
            "................",
            ".#####...######.",
            ".#####...######.",
            ".##############.",
            ".#####...######.",
            ".#####...######.",
            ".#####...######.",
            "................",
        ]);
        let one = pair.one_of_pair().expect("a pair");
        let x = one.bounds().map_or(0, |b| b.0);
        assert!(
            (7..=9).contains(&x),
            "the larger, right-hand piece: from {x}"
        );
        assert!(one.area() >= 36 && one.area() <= 40, "{}", one.area());
        let body = from_rows(&[
            "................",
            ".##############.",
            ".##############.",
            ".##############.",
            "......####......",
            "......####......",
            "................",
        ]);
        assert_eq!(body.one_of_pair(), None);
        assert_eq!(body.half_of_touching_pair(), None);
        // A bar along the diagonal: its long axis at 45°, far longer than wide.
        let bar = Mask::new(
            12,
            12,
            (0..144).map(|i| (i % 12 - i / 12i32).abs() <= 1).collect(),
        );
        let (angle, ratio) = bar.long_axis();
        assert!(
            (angle - std::f64::consts::FRAC_PI_4).abs() < 1e-6,
            "{angle}"
        );
        assert!(ratio > 4.0, "{ratio}");
    }
}
