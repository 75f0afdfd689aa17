//! Real photos in class folders (`DIR/<folder>/<photo>`), each folder mapped to the
//! Fashion-MNIST labels that count as a right answer (a `labels.json` such as
//! `{"shoes": [5, 7, 9], "hat": []}`; without one, folders named after a class). Folders
//! mapped to no label (hats, skirts) are classified and reported apart, never scored.
//! Each photo goes through `predict`'s own path: decode, preprocess, classify.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use crate::model::classifier::{Classifier, average_probabilities};
use crate::{io::bounded, predict};

/// Most photos one evaluation reads (their 28×28 inputs are kept for the report).
pub const MAX_PHOTOS: usize = 100_000;
/// File endings read as photos (the content decides the format).
const PHOTO_ENDINGS: [&str; 7] = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "jfif"];

/// One class folder.
#[derive(Clone, Debug, Serialize)]
pub struct Folder {
    /// Its name.
    pub name: String,
    /// The labels that count as right (empty: not one of the ten classes).
    pub accepts: Vec<u8>,
    /// Its photos, by file name.
    #[serde(skip)]
    pub photos: Vec<PathBuf>,
}

/// A directory of class folders.
#[derive(Clone, Debug)]
pub struct PhotoFolders {
    /// The folders, by name.
    pub folders: Vec<Folder>,
}

/// A folder name made comparable with a class name: lower case, letters and digits only
/// (`T-shirt/top` is `tshirttop`).
fn plain(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Reads `dir`'s class folders, mapped by `labels` (default: `dir/labels.json` if there
/// is one, else folders named after `classes`).
pub fn open(dir: &Path, labels: Option<&Path>, classes: &[String]) -> anyhow::Result<PhotoFolders> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!(
            "{} has no class folders (DIR/<class>/<photo>)",
            dir.display()
        );
    }
    let default_labels = dir.join("labels.json");
    let labels = labels.or_else(|| default_labels.is_file().then_some(default_labels.as_path()));
    let mapping: BTreeMap<String, Vec<u8>> = match labels {
        Some(path) => {
            let bytes = bounded::read(
                path,
                1 << 20,
                "over 1 MiB; a label map is a short JSON object",
            )?;
            let map: BTreeMap<String, Vec<u8>> =
                serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{} is not a label map ({{\"folder\": [labels 0-9], ...}})",
                        path.display()
                    )
                })?;
            if let Some((folder, bad)) = map.iter().find_map(|(f, l)| {
                l.iter()
                    .find(|&&v| v as usize >= classes.len())
                    .map(|v| (f, v))
            }) {
                bail!(
                    "{}: folder {folder:?} maps to label {bad}, not 0-9",
                    path.display()
                );
            }
            if let Some(missing) = names.iter().find(|n| !map.contains_key(*n)) {
                bail!(
                    "{}: folder {missing:?} is not in the label map (map it to [] to report it apart)",
                    path.display()
                );
            }
            map
        }
        None => names
            .iter()
            .map(|n| {
                let label = classes.iter().position(|c| {
                    plain(c) == plain(n) || plain(c.split('/').next().unwrap_or(c)) == plain(n)
                });
                match label {
                    Some(l) => Ok((n.clone(), vec![l as u8])),
                    None => Err(anyhow!(
                        "folder {n:?} of {} is not named after a class; give a label map \
                         with --labels FILE.json",
                        dir.display()
                    )),
                }
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let mut folders = Vec::new();
    let mut total = 0usize;
    for name in names {
        let path = dir.join(&name);
        let mut photos = Vec::new();
        for e in
            std::fs::read_dir(&path).with_context(|| format!("cannot read {}", path.display()))?
        {
            let e = e.with_context(|| format!("cannot read {}", path.display()))?;
            let p = e.path();
            let is_photo = p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| PHOTO_ENDINGS.contains(&x.to_ascii_lowercase().as_str()));
            if is_photo && e.file_type().is_ok_and(|t| t.is_file()) {
                photos.push(p);
            }
        }
        photos.sort();
        total += photos.len();
        if total > MAX_PHOTOS {
            bail!("{} holds more than {MAX_PHOTOS} photos", dir.display());
        }
        let accepts = mapping.get(&name).cloned().unwrap_or_default();
        folders.push(Folder {
            name,
            accepts,
            photos,
        });
    }
    if total == 0 {
        bail!(
            "{} has no photos ({} files in its class folders)",
            dir.display(),
            PHOTO_ENDINGS.join(", ")
        );
    }
    Ok(PhotoFolders { folders })
}

/// One photo's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct PhotoResult {
    /// The file.
    pub file: PathBuf,
    /// Its folder's index in [`PhotoReport::folders`].
    pub folder: usize,
    /// The most probable class.
    pub predicted: usize,
    /// Its probability.
    pub confidence: f32,
    /// Whether that class is one its folder accepts (`None`: a folder mapped to none).
    pub right: Option<bool>,
    /// Whether `predict` would call it unsure ([`predict::UNSURE_BELOW`]).
    pub unsure: bool,
    /// The 28×28 input the model saw.
    #[serde(skip)]
    pub input: Vec<u8>,
}

/// One folder's scores.
#[derive(Clone, Debug, Serialize)]
pub struct FolderScore {
    /// The folder.
    pub folder: String,
    /// Class names that count as right.
    pub accepts: Vec<String>,
    /// Photos in it.
    pub photos: usize,
    /// Photos classified as one of `accepts`.
    pub right: usize,
    /// `right / photos` (NaN, stored as null, for a folder mapped to no label).
    #[serde(serialize_with = "nan_as_null")]
    pub recall: f64,
    /// How many of its photos went to each class, in label order.
    pub predicted: Vec<usize>,
    /// Photos `predict` would call unsure.
    pub unsure: usize,
    /// Right answers among them.
    pub right_unsure: usize,
}

fn nan_as_null<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

/// What the models made of the photos.
#[derive(Clone, Debug, Serialize)]
pub struct PhotoReport {
    /// Accuracy over the photos of folders mapped to a label.
    pub accuracy: f64,
    /// Photos of folders mapped to a label.
    pub scored: usize,
    /// Photos of folders mapped to none.
    pub unscored: usize,
    /// Per folder, in name order.
    pub folders: Vec<FolderScore>,
    /// Per photo, folder by folder.
    pub results: Vec<PhotoResult>,
    /// Mean milliseconds to decode and preprocess one photo (one thread).
    pub preprocess_ms: f64,
}

/// Classifies every photo with the average of `models`' probabilities.
pub fn evaluate(models: &mut [Classifier], set: &PhotoFolders) -> anyhow::Result<PhotoReport> {
    let Some(first) = models.first() else {
        bail!("no model to evaluate");
    };
    let classes = first.classes.clone();
    if models.iter().any(|m| m.classes != classes) {
        bail!("the models disagree on the classes");
    }
    let mut inputs = Vec::new();
    let mut origin = Vec::new();
    let started = std::time::Instant::now();
    for (f, folder) in set.folders.iter().enumerate() {
        for photo in &folder.photos {
            let img = predict::image::load_image(photo)?;
            inputs.push(predict::prepare(&img));
            origin.push((f, photo.clone()));
        }
    }
    let n = origin.len();
    let preprocess_ms = 1e3 * started.elapsed().as_secs_f64() / n.max(1) as f64;
    // The ensemble reads the photos as one model would, averaging the probabilities.
    let (probs, views) = predict::input_probabilities(&classes, &inputs, |pixels| {
        average_probabilities(models.iter_mut().map(|m| m.probabilities(pixels)))
    });
    let c = classes.len();
    let mut folders: Vec<FolderScore> = set
        .folders
        .iter()
        .map(|f| FolderScore {
            folder: f.name.clone(),
            accepts: f
                .accepts
                .iter()
                .map(|&l| classes[l as usize].clone())
                .collect(),
            photos: f.photos.len(),
            right: 0,
            recall: f64::NAN,
            predicted: vec![0; c],
            unsure: 0,
            right_unsure: 0,
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for (i, (f, file)) in origin.into_iter().enumerate() {
        let row = &probs[i * c..(i + 1) * c];
        let predicted = nn::loss::argmax(row);
        let accepts = &set.folders[f].accepts;
        let right = (!accepts.is_empty()).then(|| accepts.contains(&(predicted as u8)));
        let unsure = row[predicted] < predict::UNSURE_BELOW;
        let score = &mut folders[f];
        score.predicted[predicted] += 1;
        if right == Some(true) {
            score.right += 1;
        }
        if unsure {
            score.unsure += 1;
            if right == Some(true) {
                score.right_unsure += 1;
            }
        }
        results.push(PhotoResult {
            file,
            folder: f,
            predicted,
            confidence: row[predicted],
            right,
            unsure,
            input: inputs[i].seen(views[i]).to_vec(),
        });
    }
    let (mut scored, mut right) = (0, 0);
    for (score, folder) in folders.iter_mut().zip(&set.folders) {
        if !folder.accepts.is_empty() && score.photos > 0 {
            score.recall = score.right as f64 / score.photos as f64;
            scored += score.photos;
            right += score.right;
        }
    }
    Ok(PhotoReport {
        accuracy: if scored > 0 {
            right as f64 / scored as f64
        } else {
            f64::NAN
        },
        scored,
        unscored: n - scored,
        folders,
        results,
        preprocess_ms,
    })
}
