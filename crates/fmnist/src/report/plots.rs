//! Pictures for people, as PNG: training curves, confusion matrices, per-class precision
//! and recall, and grids of images with captions. Drawn with `plotters` into memory,
//! encoded with `image` and written atomically. Text is set in DejaVu Sans, embedded in
//! the binary, so the pictures look the same on every machine.

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::data::{Dataset, SIDE};
use crate::eval::{Evaluation, Metrics};
use crate::io::atomic;
use crate::train::EpochRecord;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Training and validation colours (blue and orange, told apart by most colour-blind eyes).
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
/// Captions of mistakes.
const MISTAKE: RGBColor = RGBColor(200, 30, 30);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

fn register_fonts() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(anyhow!("the embedded font could not be loaded"))
    }
}

/// Draws a `width × height` picture on white and returns it as PNG bytes.
fn png(width: u32, height: u32, draw: impl FnOnce(&Area<'_>) -> Drawn) -> anyhow::Result<Vec<u8>> {
    register_fonts()?;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root).map_err(|e| anyhow!("cannot draw the picture: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw the picture: {e}"))?;
    }
    let img = image::RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| anyhow!("picture buffer has the wrong size"))?;
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .context("cannot encode PNG")?;
    Ok(bytes)
}

/// Writes PNG `bytes` to `path` atomically.
pub fn save(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    atomic::write(path, bytes)
}

/// Loss and accuracy per epoch, training against validation, side by side.
pub fn training_curves(history: &[EpochRecord]) -> anyhow::Result<Vec<u8>> {
    png(1200, 480, |root| {
        let panels = root.split_evenly((1, 2));
        let n = history.len().max(1) as f64;
        let x_range = if n > 1.0 { 1.0..n } else { 0.5..1.5 };
        let has_val = history.iter().any(|r| r.val_loss.is_finite());
        type Get = fn(&EpochRecord) -> f64;
        let series: [(&str, &str, Get, Get); 2] = [
            ("Loss", "cross-entropy", |r| r.train_loss, |r| r.val_loss),
            (
                "Accuracy",
                "accuracy (%)",
                |r| 100.0 * r.train_accuracy,
                |r| 100.0 * r.val_accuracy,
            ),
        ];
        for (area, (title, y_desc, train, val)) in panels.iter().zip(series) {
            let values = history
                .iter()
                .map(train)
                .chain(history.iter().map(val))
                .filter(|v| v.is_finite());
            let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
            let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
            let pad = ((hi - lo) * 0.08).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FAMILY, 22))
                .margin(14)
                .x_label_area_size(42)
                .y_label_area_size(64)
                .build_cartesian_2d(x_range.clone(), (lo - pad)..(hi + pad))?;
            let ensemble = history.iter().any(|r| r.member > 1);
            chart
                .configure_mesh()
                .x_desc(if ensemble {
                    "epoch (the ensemble's networks one after another)"
                } else {
                    "epoch"
                })
                .y_desc(y_desc)
                .x_labels(history.len().clamp(2, 12))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style((FAMILY, 14))
                .axis_desc_style((FAMILY, 15))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            // Measured while training: with dropout, augmentation and label smoothing on,
            // so it sits above validation's clean figure (with `standard`, 0.63 against
            // 0.24); the legend says so, lest a learner read it as a bug.
            let mut lines = vec![(
                "training (as trained: dropout, augmentation, smoothing)",
                TRAIN,
                train,
            )];
            if has_val {
                lines.push(("validation", VAL, val));
            }
            for (label, colour, get) in lines {
                // An ensemble's networks train one after another: each is its own line,
                // along one axis of epochs.
                let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
                for (i, r) in history.iter().enumerate() {
                    if i == 0 || r.member != history[i - 1].member {
                        segments.push(Vec::new());
                    }
                    let point = ((i + 1) as f64, get(r));
                    if let Some(segment) = segments.last_mut()
                        && point.1.is_finite()
                    {
                        segment.push(point);
                    }
                }
                for (k, points) in segments.into_iter().enumerate() {
                    let series = chart
                        .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?;
                    if k == 0 {
                        series.label(label).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(2))
                        });
                    }
                    chart.draw_series(
                        points
                            .into_iter()
                            .map(|p| Circle::new(p, 3, colour.filled())),
                    )?;
                }
            }
            chart
                .configure_series_labels()
                .position(if title == "Loss" {
                    SeriesLabelPosition::UpperRight
                } else {
                    SeriesLabelPosition::LowerRight
                })
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }
        Ok(())
    })
}

/// `confusion[true][predicted]` as a heat map: rows are true classes, columns predictions,
/// shade by the fraction of the row, counts written in each cell.
pub fn confusion_matrix(
    confusion: &[Vec<usize>],
    classes: &[String],
    title: &str,
) -> anyhow::Result<Vec<u8>> {
    let n = classes.len();
    png(1040, 900, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(64)
            .y_label_area_size(110)
            // Integer ranges are inclusive here: 0..n-1 is n cells.
            .build_cartesian_2d(
                (0..n as i32 - 1).into_segmented(),
                (0..n as i32 - 1).into_segmented(),
            )?;
        // Row 0 (the first true class) at the top.
        let name = |k: i32| classes.get(k as usize).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) => name(*k),
                _ => String::new(),
            })
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) => name(n as i32 - 1 - *k),
                _ => String::new(),
            })
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        let mut cells = Vec::new();
        let mut texts = Vec::new();
        for (t, row) in confusion.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            let y = n as i32 - 1 - t as i32;
            for (p, &count) in row.iter().enumerate() {
                let f = count as f64 / total;
                let shade = |lo: f64, hi: f64| (hi - (hi - lo) * f.sqrt()) as u8;
                let colour = RGBColor(shade(8.0, 247.0), shade(48.0, 251.0), shade(107.0, 255.0));
                let x = p as i32;
                cells.push(Rectangle::new(
                    [
                        (SegmentValue::Exact(x), SegmentValue::Exact(y + 1)),
                        (SegmentValue::Exact(x + 1), SegmentValue::Exact(y)),
                    ],
                    colour.filled(),
                ));
                let ink = if f > 0.35 { &WHITE } else { &BLACK };
                let style = TextStyle::from((FAMILY, 14))
                    .color(ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                texts.push(Text::new(
                    count.to_string(),
                    (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                    style,
                ));
            }
        }
        chart.draw_series(cells)?;
        chart.draw_series(texts)?;
        Ok(())
    })
}

/// Precision and recall of each class as horizontal bars (percent), values written
/// at the bars' ends.
pub fn class_scores(m: &Metrics) -> anyhow::Result<Vec<u8>> {
    let n = m.classes.len();
    png(1000, 720, |root| {
        let lowest = m
            .per_class
            .iter()
            .flat_map(|c| [c.precision, c.recall])
            .fold(1.0f64, f64::min);
        let x_min = ((lowest * 100.0 - 10.0) / 10.0).floor().clamp(0.0, 9.0) * 10.0;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Per-class precision and recall (accuracy {:.2} %)",
                    100.0 * m.accuracy
                ),
                (FAMILY, 22),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(110)
            // One band more than classes (integer ranges are inclusive): the top one holds
            // the legend.
            .build_cartesian_2d(x_min..100.0, (0..n as i32).into_segmented())?;
        let name = |k: i32| m.classes.get(k as usize).cloned().unwrap_or_default();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("%")
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) => name(n as i32 - 1 - *k),
                _ => String::new(),
            })
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let mut labels = Vec::new();
        let mut bars: [Vec<_>; 2] = [Vec::new(), Vec::new()];
        for (k, c) in m.per_class.iter().enumerate() {
            let y = n as i32 - 1 - k as i32;
            // Precision in the upper half of the class's band, recall in the lower.
            for (which, value) in [c.precision, c.recall].into_iter().enumerate() {
                let upper = which == 0;
                let (top, bottom) = if upper {
                    (SegmentValue::Exact(y + 1), SegmentValue::CenterOf(y))
                } else {
                    (SegmentValue::CenterOf(y), SegmentValue::Exact(y))
                };
                let colour = if upper { TRAIN } else { VAL };
                let mut bar =
                    Rectangle::new([(x_min, top), (100.0 * value, bottom)], colour.filled());
                bar.set_margin(if upper { 6 } else { 1 }, if upper { 1 } else { 6 }, 0, 0);
                bars[which].push(bar);
                // Centre of the half band: a quarter band (≈ 15 px) from its middle.
                let dy = if upper { -15 } else { 15 };
                labels.push(
                    EmptyElement::at((100.0 * value, SegmentValue::CenterOf(y)))
                        + Text::new(
                            format!("{:.1}", 100.0 * value),
                            (-4, dy),
                            TextStyle::from((FAMILY, 12))
                                .color(&WHITE)
                                .pos(Pos::new(HPos::Right, VPos::Center)),
                        ),
                );
            }
        }
        let [precision, recall] = bars;
        for (series, label, colour) in [(precision, "precision", TRAIN), (recall, "recall", VAL)] {
            chart
                .draw_series(series)?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 16, y + 5)], colour.filled())
                });
        }
        chart.draw_series(labels)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        Ok(())
    })
}

/// One cell of an image grid: a 28×28 image and up to two caption lines; a highlighted
/// cell gets a red caption.
pub struct Tile<'a> {
    /// The image, 784 bytes, row after row.
    pub pixels: &'a [u8],
    /// Caption lines.
    pub caption: Vec<String>,
    /// Draw the caption in red (a mistake).
    pub highlight: bool,
}

/// Tiles in rows of `columns`, each image shown 3× (84 px) above its caption.
pub fn image_grid(title: &str, tiles: &[Tile<'_>], columns: usize) -> anyhow::Result<Vec<u8>> {
    const SCALE: usize = 3;
    const CELL_W: usize = 170;
    const TITLE_H: usize = 44;
    let lines = tiles.iter().map(|t| t.caption.len()).max().unwrap_or(0);
    let cell_h = SIDE * SCALE + 12 + 17 * lines + 10;
    let columns = columns.max(1);
    let rows = tiles.len().div_ceil(columns).max(1);
    let (w, h) = (CELL_W * columns, TITLE_H + cell_h * rows);
    png(w as u32, h as u32, |root| {
        draw_title(root, title, w, TITLE_H)?;
        for (i, tile) in tiles.iter().enumerate() {
            let (col, row) = (i % columns, i / columns);
            let x0 = col * CELL_W + (CELL_W - SIDE * SCALE) / 2;
            let y0 = TITLE_H + row * cell_h;
            draw_input(root, tile.pixels, x0, y0, SCALE)?;
            let centre = col * CELL_W + CELL_W / 2;
            draw_caption(
                root,
                &tile.caption,
                tile.highlight,
                centre,
                y0 + SIDE * SCALE + 8,
            )?;
        }
        Ok(())
    })
}

/// A figure's title, centred in the band of height `band` at the top.
fn draw_title(root: &Area<'_>, title: &str, w: usize, band: usize) -> Drawn {
    root.draw_text(
        title,
        &TextStyle::from((FAMILY, 22)).pos(Pos::new(HPos::Center, VPos::Center)),
        (w as i32 / 2, band as i32 / 2),
    )?;
    Ok(())
}

/// A 28×28 model input at `(x0, y0)`, each pixel a `scale`-sided square, light garment
/// on black as in the dataset.
fn draw_input(root: &Area<'_>, pixels: &[u8], x0: usize, y0: usize, scale: usize) -> Drawn {
    for (k, &v) in pixels.iter().enumerate().take(SIDE * SIDE) {
        let (px, py) = (x0 + (k % SIDE) * scale, y0 + (k / SIDE) * scale);
        root.draw(&Rectangle::new(
            [
                (px as i32, py as i32),
                ((px + scale) as i32, (py + scale) as i32),
            ],
            RGBColor(v, v, v).filled(),
        ))?;
    }
    Ok(())
}

/// Caption lines centred on `centre`, from `top` down; red for a mistake.
fn draw_caption(
    root: &Area<'_>,
    lines: &[String],
    highlight: bool,
    centre: usize,
    top: usize,
) -> Drawn {
    let ink = if highlight { &MISTAKE } else { &BLACK };
    for (l, line) in lines.iter().enumerate() {
        root.draw_text(
            line,
            &TextStyle::from((FAMILY, 14))
                .color(ink)
                .pos(Pos::new(HPos::Center, VPos::Top)),
            (centre as i32, (top + 17 * l) as i32),
        )?;
    }
    Ok(())
}

/// The first `count` images of `data` with their class names (like the figure every
/// Fashion-MNIST tutorial starts with).
pub fn samples(data: &Dataset, classes: &[String], count: usize) -> anyhow::Result<Vec<u8>> {
    let tiles: Vec<Tile<'_>> = (0..count.min(data.len()))
        .map(|i| Tile {
            pixels: data.image(i),
            caption: vec![classes[data.labels[i] as usize].clone()],
            highlight: false,
        })
        .collect();
    image_grid(
        &format!("Fashion-MNIST: the first {} training images", tiles.len()),
        &tiles,
        8,
    )
}

/// Indices of the `count` wrong predictions made with the highest probability, most
/// confident first (ties by index, so the grid is stable).
pub fn confident_mistakes(eval: &Evaluation, labels: &[u8], c: usize, count: usize) -> Vec<usize> {
    let mut wrong: Vec<(f32, usize)> = eval
        .predictions
        .iter()
        .zip(labels)
        .enumerate()
        .filter(|(_, (p, t))| p != t)
        .map(|(i, (&p, _))| (eval.probabilities[i * c + p as usize], i))
        .collect();
    wrong.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    wrong.into_iter().take(count).map(|(_, i)| i).collect()
}

/// A grid of the most confidently misclassified images: true class, predicted class and
/// the probability given to it.
pub fn mistakes(
    data: &Dataset,
    eval: &Evaluation,
    classes: &[String],
    count: usize,
) -> anyhow::Result<Vec<u8>> {
    let c = classes.len();
    let tiles: Vec<Tile<'_>> = confident_mistakes(eval, &data.labels, c, count)
        .into_iter()
        .map(|i| {
            let p = eval.predictions[i] as usize;
            Tile {
                pixels: data.image(i),
                caption: vec![
                    format!("true: {}", classes[data.labels[i] as usize]),
                    format!(
                        "said: {} {:.1} %",
                        classes[p],
                        100.0 * eval.probabilities[i * c + p]
                    ),
                ],
                highlight: true,
            }
        })
        .collect();
    image_grid(
        &format!(
            "The {} most confident mistakes on the test set",
            tiles.len()
        ),
        &tiles,
        6,
    )
}

/// One cell of a contact sheet: a photo's thumbnail, the 28×28 input the model saw, and
/// caption lines; a highlighted cell (a mistake) gets a red caption.
pub struct PhotoCell<'a> {
    /// The photo, fitted into 84×84.
    pub thumbnail: image::RgbImage,
    /// The model's input, 784 bytes.
    pub input: &'a [u8],
    /// Caption lines.
    pub caption: Vec<String>,
    /// Draw the caption in red.
    pub highlight: bool,
}

/// A contact sheet: photo and model input side by side, captions below, in rows of
/// `columns`.
pub fn photo_sheet(
    title: &str,
    cells: &[PhotoCell<'_>],
    columns: usize,
) -> anyhow::Result<Vec<u8>> {
    const SCALE: usize = 3;
    const THUMB: usize = SIDE * SCALE;
    const CELL_W: usize = 2 * THUMB + 30;
    const TITLE_H: usize = 44;
    let lines = cells.iter().map(|t| t.caption.len()).max().unwrap_or(0);
    let cell_h = THUMB + 12 + 17 * lines + 10;
    let columns = columns.max(1);
    let rows = cells.len().div_ceil(columns).max(1);
    let (w, h) = (CELL_W * columns, TITLE_H + cell_h * rows);
    png(w as u32, h as u32, |root| {
        draw_title(root, title, w, TITLE_H)?;
        for (i, cell) in cells.iter().enumerate() {
            let (col, row) = (i % columns, i / columns);
            let x0 = col * CELL_W + 10;
            let y0 = TITLE_H + row * cell_h;
            let (tw, th) = cell.thumbnail.dimensions();
            let (ox, oy) = ((THUMB - tw as usize) / 2, (THUMB - th as usize) / 2);
            for (x, y, p) in cell.thumbnail.enumerate_pixels() {
                root.draw_pixel(
                    ((x0 + ox + x as usize) as i32, (y0 + oy + y as usize) as i32),
                    &RGBColor(p[0], p[1], p[2]),
                )?;
            }
            draw_input(root, cell.input, x0 + THUMB + 10, y0, SCALE)?;
            let centre = col * CELL_W + CELL_W / 2;
            draw_caption(root, &cell.caption, cell.highlight, centre, y0 + THUMB + 8)?;
        }
        Ok(())
    })
}

/// The contact sheet of `eval --photos-dir`: every photo (up to `limit`, mistakes
/// first), what the model saw, its answer, and whether it is right.
pub fn photos_sheet(
    report: &crate::eval::photo_folders::PhotoReport,
    classes: &[String],
    limit: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut order: Vec<usize> = (0..report.results.len()).collect();
    // Mistakes first, then unscored folders, then right answers; stable within each.
    order.sort_by_key(|&i| match report.results[i].right {
        Some(false) => 0,
        None => 1,
        Some(true) => 2,
    });
    let mut cells = Vec::new();
    for &i in order.iter().take(limit) {
        let r = &report.results[i];
        let photo = crate::predict::image::load_image(&r.file)?;
        let thumbnail = photo.thumbnail(84, 84).to_rgb8();
        let verdict = match r.right {
            Some(true) => "right",
            Some(false) => "wrong",
            None => "no class",
        };
        cells.push(PhotoCell {
            thumbnail,
            input: &r.input,
            caption: vec![
                format!("{}: {}", report.folders[r.folder].folder, verdict),
                format!("{} {:.0} %", classes[r.predicted], 100.0 * r.confidence),
            ],
            highlight: r.right == Some(false),
        });
    }
    let right: usize = report
        .results
        .iter()
        .filter(|r| r.right == Some(true))
        .count();
    photo_sheet(
        &format!(
            "Real photos: {right} of {} right ({:.1} %); photo, what the model saw, its answer",
            report.scored,
            100.0 * report.accuracy
        ),
        &cells,
        6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PIXELS;

    fn decode(bytes: &[u8]) -> image::RgbImage {
        image::load_from_memory(bytes).unwrap().to_rgb8()
    }

    fn colours(img: &image::RgbImage) -> usize {
        let mut seen = std::collections::HashSet::new();
        for p in img.pixels() {
            seen.insert(p.0);
        }
        seen.len()
    }

    #[test]
    fn grid_shows_each_image_three_times_larger_where_it_belongs() {
        let a: Vec<u8> = (0..PIXELS).map(|i| (i % 200) as u8 + 30).collect();
        let b = vec![0u8; PIXELS];
        let tiles = [
            Tile {
                pixels: &a,
                caption: vec!["first".into()],
                highlight: false,
            },
            Tile {
                pixels: &b,
                caption: vec!["second".into(), "line".into()],
                highlight: true,
            },
        ];
        let img = decode(&image_grid("title", &tiles, 2).unwrap());
        assert_eq!(img.dimensions(), (340, 44 + 84 + 12 + 34 + 10));
        // Tile 0's pixel (row 5, column 7) fills a 3×3 block at its offset.
        let (x0, y0) = ((170 - 84) / 2, 44);
        let v = a[5 * SIDE + 7];
        for dy in 0..3 {
            for dx in 0..3 {
                let p = img.get_pixel((x0 + 7 * 3 + dx) as u32, (y0 + 5 * 3 + dy) as u32);
                assert_eq!(p.0, [v, v, v]);
            }
        }
        // Tile 1 is black; its red caption is drawn below it.
        assert_eq!(img.get_pixel(170 + x0 as u32 + 40, 44 + 40).0, [0, 0, 0]);
        let caption = (170..340).flat_map(|x| (44 + 90..44 + 130).map(move |y| (x, y)));
        assert!(
            caption
                .map(|(x, y)| img.get_pixel(x, y).0)
                .any(|p| p[0] > 150 && p[1] < 100)
        );
    }

    #[test]
    fn charts_render_with_text_and_colour() {
        let history: Vec<EpochRecord> = (1..=4)
            .map(|e| EpochRecord {
                member: 1,
                epoch: e,
                train_loss: 1.0 / e as f64,
                train_accuracy: 0.6 + 0.05 * e as f64,
                val_loss: 1.2 / e as f64,
                val_accuracy: 0.55 + 0.05 * e as f64,
                lr: 1e-3,
                seconds: 1.0,
                train_images_per_s: 1.0,
            })
            .collect();
        let curves = decode(&training_curves(&history).unwrap());
        assert_eq!(curves.dimensions(), (1200, 480));
        assert!(curves.pixels().any(|p| p.0 == [TRAIN.0, TRAIN.1, TRAIN.2]));
        assert!(curves.pixels().any(|p| p.0 == [VAL.0, VAL.1, VAL.2]));
        // Anti-aliased text gives many grey levels.
        assert!(colours(&curves) > 50);

        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let confusion = vec![vec![8, 1, 1], vec![0, 10, 0], vec![5, 0, 5]];
        let heat = decode(&confusion_matrix(&confusion, &classes, "t").unwrap());
        assert_eq!(heat.dimensions(), (1040, 900));
        // The darkest cell (a full row on the diagonal) is the darkest blue.
        assert!(heat.pixels().any(|p| p.0 == [8, 48, 107]));
        let one_row = decode(&confusion_matrix(&[vec![3]], &classes[..1], "t").unwrap());
        assert!(colours(&one_row) > 10);
    }

    #[test]
    fn mistakes_are_ranked_by_confidence() {
        let eval = Evaluation {
            probabilities: vec![0.9, 0.1, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4],
            predictions: vec![0, 1, 1, 0],
            loss: 0.0,
            accuracy: 0.25,
        };
        // Truth 1 1 0 0: image 0 is wrong at 0.9, 2 at 0.8, 1 and 3 are right.
        assert_eq!(confident_mistakes(&eval, &[1, 1, 0, 0], 2, 5), [0, 2]);
        assert_eq!(confident_mistakes(&eval, &[1, 1, 0, 0], 2, 1), [0]);
    }
}
