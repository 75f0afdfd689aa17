//! Classifying users' own images: decode any common format ([`image`]), turn it into a
//! Fashion-MNIST-like 28×28 input ([`preprocess`]), and rank the classes.

pub mod image;
pub mod preprocess;
pub mod segment;

use ::image::GrayImage;
use serde::Serialize;

pub use self::image::{
    DecodeError, MAX_PIXELS, MAX_SIDE, decode_bytes, decode_cost, decode_within, load_image,
};
pub use self::preprocess::{Input, TOP_ASPECT, TOP_ASPECTS, View, prepare, preprocess};
use crate::data::{CLASS_NAMES, FOOTWEAR, PIXELS, SIDE};
use crate::model::Classifier;

/// One ranked class.
#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    /// Class name.
    pub class: String,
    /// Label 0–9.
    pub label: usize,
    /// Probability 0–1.
    pub probability: f32,
}

/// A prediction for one image.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// The image file (as given).
    pub file: String,
    /// The most probable class.
    pub class: String,
    /// Its label 0–9.
    pub label: usize,
    /// Its probability.
    pub probability: f32,
    /// Whether the model is unsure: its best class is more likely wrong than right
    /// (calibrated probability below [`UNSURE_BELOW`]), as for a photo of something
    /// that is none of the classes, or one it cannot make out.
    pub unsure: bool,
    /// The `k` most probable classes, best first.
    pub top: Vec<Ranked>,
    /// Whether the photo showed a pair (of shoes, say), so that only footwear was
    /// ranked ([`pair_prior`]): found as two pieces, or as one whose half the model
    /// read as footwear ([`Input::half`]).
    pub pair: bool,
    /// The rendering the answer came from (what `--show-input` shows: for the narrow
    /// view, at the tops' median [`TOP_ASPECT`]). In JSON it is `"narrow"`: whether
    /// the answer came from the photo's object read also as narrow as the dataset's
    /// tops ([`Input::narrow`], [`input_probabilities`]).
    #[serde(rename = "narrow", serialize_with = "serialize_narrow")]
    pub view: View,
}

/// [`Prediction::view`] as JSON's `"narrow"`.
fn serialize_narrow<S: serde::Serializer>(view: &View, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(*view == View::Narrow)
}

/// Below this probability of the best class a prediction is marked unsure. With the
/// temperature fitted on the validation split, a probability means how often such an
/// answer is right, so this says "more likely wrong than right"; it is not fitted to
/// any photos.
pub const UNSURE_BELOW: f32 = 0.5;

/// Ranks the classes of each preprocessed image (784 pixels each, in `inputs`).
pub fn rank(model: &mut Classifier, names: &[String], inputs: &[u8], k: usize) -> Vec<Prediction> {
    let probs = model.probabilities(inputs);
    let n = inputs.len() / PIXELS;
    rank_rows(
        model,
        names,
        &probs,
        &vec![false; n],
        &vec![View::Whole; n],
        k,
    )
}

/// Ranks the classes of each prepared image as [`input_probabilities`] reads them.
pub fn rank_inputs(
    model: &mut Classifier,
    names: &[String],
    inputs: &[Input],
    k: usize,
) -> Vec<Prediction> {
    let classes = model.classes.clone();
    let (probs, views) = input_probabilities(&classes, inputs, |px| model.probabilities(px));
    rank_rows(model, names, &probs, &pairs(inputs, &views), &views, k)
}

/// The probabilities (a row an input, a column a class; `probabilities` gives them for
/// 784-pixel images) of prepared inputs as `predict` ranks them, and for each the view
/// they came from.
/// - A photo's object that reads as a top, a dress or a bag (a top laid flat, as wide
///   as tall, has the outline of the dataset's bags) and has narrow views
///   ([`Input::narrow`]) is read as found and in each narrow view together
///   ([`together`]); where that reads as a top or a dress it is ranked so: the dataset
///   shows those garments no wider than its tops ([`TOP_ASPECTS`]), but how far a top
///   laid flat must be squeezed to look like them is not known.
/// - An object that may be a pair pressed together ([`Input::half`]), whose half reads
///   as footwear while the whole does not read as trousers (whose legs are such halves
///   too), is ranked by its half, as a pair.
/// - A pair is ranked among footwear only ([`pair_prior`]).
///
/// With classes other than Fashion-MNIST's, only the inputs' own pixels are read.
pub fn input_probabilities(
    classes: &[String],
    inputs: &[Input],
    mut probabilities: impl FnMut(&[u8]) -> Vec<f32>,
) -> (Vec<f32>, Vec<View>) {
    let pixels: Vec<u8> = inputs
        .iter()
        .flat_map(|i| i.pixels.iter().copied())
        .collect();
    let mut probs = probabilities(&pixels);
    let mut views = vec![View::Whole; inputs.len()];
    let c = classes.len();
    if fashion_mnist(classes) {
        let narrow = other_view(inputs, View::Narrow, &mut probabilities);
        let half = other_view(inputs, View::Half, &mut probabilities);
        for (i, view) in views.iter_mut().enumerate() {
            let row = &mut probs[i * c..(i + 1) * c];
            let seen = nn::loss::argmax(row);
            let narrowed = narrow
                .get(&i)
                .filter(|_| GARMENTS.contains(&seen) || seen == BAG)
                .map(|squeezed| together(row, squeezed))
                .filter(|both| GARMENTS.contains(&nn::loss::argmax(both)));
            let take = if let Some(both) = narrowed {
                Some((View::Narrow, both))
            } else if let Some(one) = half.get(&i).and_then(|h| h.first())
                && seen != TROUSER
                && FOOTWEAR.contains(&nn::loss::argmax(one))
            {
                Some((View::Half, one.clone()))
            } else {
                None
            };
            if let Some((v, taken)) = take {
                row.copy_from_slice(&taken);
                *view = v;
            }
        }
    }
    pair_prior(classes, &mut probs, &pairs(inputs, &views));
    (probs, views)
}

/// The answer of several readings of one object, each weighed alike: the renormalised
/// geometric mean of `whole` and the rows of `others` (the softmax of their mean
/// log-probabilities), so a class must be likely in every reading to lead.
fn together(whole: &[f32], others: &[Vec<f32>]) -> Vec<f32> {
    let rows = std::iter::once(whole).chain(others.iter().map(Vec::as_slice));
    let n = 1 + others.len();
    let mut log_mean = vec![0.0f64; whole.len()];
    for row in rows {
        for (m, &p) in log_mean.iter_mut().zip(row) {
            // A probability that underflowed to 0 counts as the least positive one, so
            // one reading cannot veto a class outright.
            *m += (p as f64).max(f32::MIN_POSITIVE as f64).ln() / n as f64;
        }
    }
    let top = log_mean.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = log_mean.iter().map(|m| (m - top).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}

/// Whether each input, ranked by its view in `views`, is one of a pair.
fn pairs(inputs: &[Input], views: &[View]) -> Vec<bool> {
    inputs
        .iter()
        .zip(views)
        .map(|(i, &v)| i.pair || v == View::Half)
        .collect()
}

/// The probabilities of each rendering of `view` ([`Input::renderings`]) of each input
/// that has one, by input index.
fn other_view(
    inputs: &[Input],
    view: View,
    probabilities: &mut impl FnMut(&[u8]) -> Vec<f32>,
) -> std::collections::BTreeMap<usize, Vec<Vec<f32>>> {
    let which: Vec<(usize, &[u8])> = inputs
        .iter()
        .enumerate()
        .flat_map(|(i, input)| input.renderings(view).into_iter().map(move |px| (i, px)))
        .collect();
    let mut out = std::collections::BTreeMap::<usize, Vec<Vec<f32>>>::new();
    if which.is_empty() {
        return out;
    }
    let pixels: Vec<u8> = which
        .iter()
        .flat_map(|(_, px)| px.iter().copied())
        .collect();
    let probs = probabilities(&pixels);
    let c = probs.len() / which.len();
    for ((i, _), row) in which.iter().zip(probs.chunks_exact(c.max(1))) {
        out.entry(*i).or_default().push(row.to_vec());
    }
    out
}

/// The labels of the dataset's tops and dresses, shown hanging, no wider than
/// [`TOP_ASPECT`]: T-shirt/top, Pullover, Dress, Coat, Shirt.
const GARMENTS: [usize; 5] = [0, 2, 3, 4, 6];

/// The label of Bag.
const BAG: usize = 8;

/// The label of Trouser.
const TROUSER: usize = 1;

/// Whether `classes` are Fashion-MNIST's, in its order.
fn fashion_mnist(classes: &[String]) -> bool {
    classes.len() == CLASS_NAMES.len() && classes.iter().zip(CLASS_NAMES).all(|(a, b)| a == b)
}

/// For photos of pairs: of Fashion-MNIST's ten classes only footwear comes in pairs, so
/// each row of `probs` (one an image, a probability a class) whose image `pairs` marks
/// becomes the probabilities of the footwear classes, given that it is one (the others
/// 0, the three scaled to sum to 1). Left alone when the classes are not
/// Fashion-MNIST's; a row where the model gives footwear no probability at all, too.
pub fn pair_prior(classes: &[String], probs: &mut [f32], pairs: &[bool]) {
    if !fashion_mnist(classes) {
        return;
    }
    let rows = probs.chunks_exact_mut(classes.len()).zip(pairs);
    for (row, _) in rows.filter(|(_, pair)| **pair) {
        let footwear: f32 = FOOTWEAR.iter().map(|&l| row[l]).sum();
        if footwear.is_nan() || footwear <= 0.0 {
            continue;
        }
        for (l, p) in row.iter_mut().enumerate() {
            *p = if FOOTWEAR.contains(&l) {
                *p / footwear
            } else {
                0.0
            };
        }
    }
}

/// Ranks the classes of each row of probabilities (of a pair where `pairs` says so, of
/// the view `views` names).
fn rank_rows(
    model: &Classifier,
    names: &[String],
    probs: &[f32],
    pairs: &[bool],
    views: &[View],
    k: usize,
) -> Vec<Prediction> {
    let c = model.classes.len();
    probs
        .chunks_exact(c)
        .zip(names)
        .zip(pairs.iter().zip(views))
        .map(|((row, file), (&pair, &view))| {
            let mut order: Vec<usize> = (0..c).collect();
            // Stable: equal probabilities keep label order.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top: Vec<Ranked> = order
                .iter()
                .take(k.clamp(1, c))
                .map(|&l| Ranked {
                    class: model.classes[l].clone(),
                    label: l,
                    probability: row[l],
                })
                .collect();
            Prediction {
                file: file.clone(),
                class: top[0].class.clone(),
                label: top[0].label,
                probability: top[0].probability,
                unsure: top[0].probability < UNSURE_BELOW,
                top,
                pair,
                view,
            }
        })
        .collect()
}

/// Loads, preprocesses and classifies image files; fails on the first unusable file.
pub fn predict_files(
    model: &mut Classifier,
    paths: &[std::path::PathBuf],
    k: usize,
) -> anyhow::Result<Vec<Prediction>> {
    let inputs = prepare_files(paths)?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Ok(rank_inputs(model, &names, &inputs, k))
}

/// The 28×28 model inputs of image files, 784 bytes each, in order.
pub fn preprocess_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<u8>> {
    Ok(prepare_files(paths)?
        .into_iter()
        .flat_map(|i| i.pixels)
        .collect())
}

/// The prepared inputs of image files ([`prepare`]), in order.
pub fn prepare_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Input>> {
    paths.iter().map(|p| Ok(prepare(&load_image(p)?))).collect()
}

/// The file names `predict --show-input` gives the inputs of `images`:
/// `NAME.input.png`, and `NAME-2.input.png`, `NAME-3.input.png`, ... for later images
/// whose names would repeat one (`a/x.png` and `b/x.png`), so none is overwritten;
/// `true` marks a name so changed.
pub fn input_names(images: &[std::path::PathBuf]) -> Vec<(String, bool)> {
    let mut taken = std::collections::HashSet::new();
    images
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned());
            let plain = format!("{stem}.input.png");
            let name = std::iter::once(plain.clone())
                .chain((2..).map(|n| format!("{stem}-{n}.input.png")))
                .find(|name| !taken.contains(name))
                .unwrap_or_default();
            taken.insert(name.clone());
            let renamed = name != plain;
            (name, renamed)
        })
        .collect()
}

/// A 28×28 model input as PNG bytes (what `predict --show-input` writes).
pub fn input_png(pixels: &[u8]) -> anyhow::Result<Vec<u8>> {
    let img = GrayImage::from_raw(SIDE as u32, SIDE as u32, pixels.to_vec()).ok_or_else(|| {
        anyhow::anyhow!("a model input has {} pixels, not {PIXELS}", pixels.len())
    })?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        ::image::ImageFormat::Png,
    )?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_ranked_among_footwear_only() {
        let classes: Vec<String> = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
        // Bag first, then Sneaker and Ankle boot.
        let mut row = [0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.2, 0.6, 0.1];
        pair_prior(&classes, &mut row, &[true]);
        let expected = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0 / 3.0, 0.0, 1.0 / 3.0];
        assert!(
            row.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6),
            "{row:?}"
        );
        // Other classes, or no footwear at all: left alone.
        let mut other = [0.5, 0.5];
        pair_prior(&["a".to_string(), "b".to_string()], &mut other, &[true]);
        assert_eq!(other, [0.5, 0.5]);
        let mut none = [0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0, 0.6, 0.0];
        pair_prior(&classes, &mut none, &[true]);
        assert_eq!(none, [0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0, 0.0, 0.6, 0.0]);
        // Only the rows of pairs: the first image of two is not one.
        let mut two = [row, [0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.2, 0.6, 0.1]].concat();
        pair_prior(&classes, &mut two, &[false, true]);
        assert_eq!(&two[..10], &row);
        assert!(
            two[10..]
                .iter()
                .zip(expected)
                .all(|(a, b)| (a - b).abs() < 1e-6)
        );
    }

    /// An input whose pixels all hold `view` and whose two narrow views, if any, hold
    /// `narrow`.
    fn input(view: u8, narrow: Option<u8>, pair: bool) -> Input {
        Input {
            pixels: vec![view; PIXELS],
            pair,
            narrow: narrow.map_or(vec![], |v| vec![vec![v; PIXELS]; 2]),
            half: None,
        }
    }

    /// [`input`] with a half of a possible pair, whose pixels all hold `half`.
    fn with_half(mut input: Input, half: u8) -> Input {
        input.half = Some(vec![half; PIXELS]);
        input
    }

    /// A "model" that is sure of the class its image's pixel value names.
    fn sure(pixels: &[u8]) -> Vec<f32> {
        pixels
            .chunks_exact(PIXELS)
            .flat_map(|img| {
                (0..10).map(move |l| if l == img[0] as usize { 0.9 } else { 0.1 / 9.0 })
            })
            .collect()
    }

    #[test]
    fn a_wide_object_read_as_a_top_or_bag_is_ranked_by_its_narrow_view() {
        let classes: Vec<String> = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
        let inputs = [
            input(8, Some(2), false), // Bag, narrow Pullover: taken.
            input(6, Some(0), false), // Shirt, narrow T-shirt/top: taken.
            input(7, Some(4), false), // Sneaker: kept, whatever the narrow view says.
            input(0, Some(8), false), // narrow Bag: kept.
            input(4, None, false),    // no narrow view.
            input(8, None, true),     // a pair: footwear only, all alike.
        ];
        let (probs, views) = input_probabilities(&classes, &inputs, sure);
        let (w, n) = (View::Whole, View::Narrow);
        assert_eq!(views, [n, n, w, w, w, w]);
        let best: Vec<usize> = probs.chunks_exact(10).map(nn::loss::argmax).collect();
        assert_eq!(best, [2, 0, 7, 0, 4, 5]);
        assert!((probs[5 * 10 + 7] - 1.0 / 3.0).abs() < 1e-6);
        // Other classes: only the inputs' own pixels are read.
        let other: Vec<String> = (0..10).map(|l| format!("c{l}")).collect();
        let mut calls = 0;
        let (probs, views) = input_probabilities(&other, &inputs, |px| {
            calls += 1;
            sure(px)
        });
        assert_eq!((calls, views), (1, vec![View::Whole; 6]));
        let best: Vec<usize> = probs.chunks_exact(10).map(nn::loss::argmax).collect();
        assert_eq!(best, [8, 6, 7, 0, 4, 8]);
        // No inputs, no rows.
        assert_eq!(input_probabilities(&classes, &[], sure), (vec![], vec![]));
    }

    #[test]
    fn the_whole_and_the_narrow_views_are_read_together() {
        let classes: Vec<String> = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
        // A Shirt as found, a T-shirt/top in one narrow view and a Shirt in the other:
        // the class likely in every reading leads.
        let mut wavering = input(6, None, false);
        wavering.narrow = vec![vec![0; PIXELS], vec![6; PIXELS]];
        // A Bag as found and narrow, whatever one view says: kept as found.
        let mut bag = input(8, None, false);
        bag.narrow = vec![vec![8; PIXELS], vec![2; PIXELS]];
        let (probs, views) = input_probabilities(&classes, &[wavering, bag], sure);
        assert_eq!(views, [View::Narrow, View::Whole]);
        let (shirt, bag) = (&probs[..10], &probs[10..]);
        assert_eq!(nn::loss::argmax(shirt), 6);
        assert!((shirt.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // The geometric mean of 0.9, 0.9 and 0.1/9 for Shirt, of 0.1/9, 0.1/9 and 0.9
        // for T-shirt/top, and of 0.1/9 thrice for the rest, renormalised.
        let (hi, lo) = (0.9f64, 0.1f64 / 9.0);
        let (s, t, r) = ((hi * hi * lo).cbrt(), (lo * lo * hi).cbrt(), lo);
        let sum = s + t + 8.0 * r;
        assert!((shirt[6] as f64 - s / sum).abs() < 1e-6, "{shirt:?}");
        assert!((shirt[0] as f64 - t / sum).abs() < 1e-6, "{shirt:?}");
        assert_eq!(bag, &sure(&[8; PIXELS])[..]);
        // A reading that is sure a class is impossible weighs in without vetoing it.
        let zero = [0.0, 1.0];
        let both = together(&[0.5, 0.5], &[zero.to_vec(), vec![0.9, 0.1]]);
        assert!(
            both.iter().all(|p| p.is_finite()) && both[1] > 0.99,
            "{both:?}"
        );
    }

    #[test]
    fn a_possible_pair_whose_half_reads_as_footwear_is_ranked_as_a_pair() {
        let classes: Vec<String> = CLASS_NAMES.iter().map(|c| c.to_string()).collect();
        let inputs = [
            with_half(input(8, None, false), 7), // Bag, half Sneaker: a pair.
            with_half(input(3, None, false), 9), // Dress, half Ankle boot: a pair.
            with_half(input(1, None, false), 5), // Trousers: kept, legs read as shoes.
            with_half(input(8, None, false), 0), // half a T-shirt/top: kept.
            with_half(input(8, Some(2), false), 7), // the narrow view comes first.
            input(8, None, false),               // no half.
        ];
        let (probs, views) = input_probabilities(&classes, &inputs, sure);
        let (w, n, h) = (View::Whole, View::Narrow, View::Half);
        assert_eq!(views, [h, h, w, w, n, w]);
        let best: Vec<usize> = probs.chunks_exact(10).map(nn::loss::argmax).collect();
        assert_eq!(best, [7, 9, 1, 8, 2, 8]);
        // Taken as a pair: footwear only, the half's probabilities rescaled.
        let row = &probs[..10];
        let footwear = 0.9 + 2.0 * 0.1 / 9.0;
        assert!((row[7] - 0.9 / footwear).abs() < 1e-6, "{row:?}");
        assert_eq!(row[8], 0.0);
        assert_eq!(
            pairs(&inputs, &views),
            [true, true, false, false, false, false]
        );
        // What each view shows.
        assert_eq!(inputs[0].seen(h), &[7; PIXELS][..]);
        assert_eq!(
            inputs[0].seen(n),
            &[8; PIXELS][..],
            "no narrow view: the whole"
        );
        assert_eq!(inputs[4].seen(n), &[2; PIXELS][..]);
    }

    #[test]
    fn inputs_of_images_with_one_name_do_not_overwrite_each_other() {
        let images: Vec<std::path::PathBuf> = ["a/x.png", "b/x.png", "c/x.jpg", "x-2.png", "y.png"]
            .map(Into::into)
            .to_vec();
        let names = super::input_names(&images);
        let expect = [
            ("x.input.png", false),
            ("x-2.input.png", true),
            ("x-3.input.png", true),
            ("x-2-2.input.png", true),
            ("y.input.png", false),
        ];
        assert_eq!(names, expect.map(|(n, r)| (n.to_string(), r)));
    }
}
