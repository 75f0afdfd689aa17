//! A network's layers as a table (Keras' `model.summary()`): each layer with its
//! settings, one example's output shape and its trained parameters.

use nn::{LayerSpec, ModelSpec};

/// The architecture's name, or "custom" for one without.
pub fn name(spec: &ModelSpec) -> &str {
    if spec.name.is_empty() {
        "custom"
    } else {
        &spec.name
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LayerRow {
    /// The layer and its settings, as written in an architecture (`conv2d 32 3×3`).
    pub layer: String,
    /// One example's output shape (height, width, channels; or features).
    pub output_shape: Vec<usize>,
    /// Trained values (running statistics are kept but not trained).
    pub params: usize,
}

/// The rows of `spec`'s table, one per layer (a residual block is one row).
pub fn rows(spec: &ModelSpec) -> anyhow::Result<Vec<LayerRow>> {
    let net = spec.build_with(&mut nn::Rng::new(0), false)?;
    Ok(net
        .layer_table()
        .into_iter()
        .map(|(i, output_shape, params)| LayerRow {
            layer: describe(&spec.layers[i]),
            output_shape,
            params,
        })
        .collect())
}

/// The table as text, with the input shape first and the total last.
pub fn table(spec: &ModelSpec) -> anyhow::Result<String> {
    let rows = rows(spec)?;
    let shape = |s: &[usize]| {
        let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
        format!("({})", dims.join(", "))
    };
    let width = rows
        .iter()
        .map(|r| r.layer.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut out = format!(
        "{:<width$}  {:<14}  {:>10}\n",
        "layer", "output shape", "parameters"
    );
    out.push_str(&format!(
        "{:<width$}  {:<14}  {:>10}\n",
        "input",
        shape(&spec.input),
        ""
    ));
    for r in &rows {
        out.push_str(&format!(
            "{:<width$}  {:<14}  {:>10}\n",
            r.layer,
            shape(&r.output_shape),
            crate::report::text::thousands(r.params)
        ));
    }
    let total: usize = rows.iter().map(|r| r.params).sum();
    out.push_str(&format!(
        "total: {} trainable parameters\n",
        crate::report::text::thousands(total)
    ));
    Ok(out)
}

fn describe(layer: &LayerSpec) -> String {
    match layer {
        LayerSpec::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            bias,
        } => {
            let mut s = format!("conv2d {filters} {kernel}×{kernel}");
            if *stride != 1 {
                s.push_str(&format!(" stride {stride}"));
            }
            if *padding != 0 {
                s.push_str(&format!(" pad {padding}"));
            }
            if !bias {
                s.push_str(" no bias");
            }
            s
        }
        LayerSpec::MaxPool2d { size, stride } | LayerSpec::AvgPool2d { size, stride } => {
            let mut s = format!("{} {size}×{size}", layer.kind());
            if let Some(st) = stride.filter(|st| st != size) {
                s.push_str(&format!(" stride {st}"));
            }
            s
        }
        LayerSpec::Linear { units, bias } => {
            format!("linear {units}{}", if *bias { "" } else { " no bias" })
        }
        LayerSpec::Dropout { rate } => format!("dropout {rate}"),
        LayerSpec::Residual { body } => format!("residual ({} layers)", body.len()),
        other => other.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_network_rows_match_the_keras_summary() {
        let rows = rows(&crate::model::simple()).unwrap();
        let shapes: Vec<_> = rows.iter().map(|r| r.output_shape.clone()).collect();
        // Keras' summary of the seed network: (26,26,32) 320, (13,13,32), (11,11,64) 18,496,
        // (5,5,64), 1600, 128 with 204,928, 128 (dropout), 10 with 1,290.
        assert_eq!(rows[0].params, 320);
        assert!(shapes.contains(&vec![26, 26, 32]) && shapes.contains(&vec![5, 5, 64]));
        assert!(rows.iter().any(|r| r.params == 18_496));
        assert!(rows.iter().any(|r| r.params == 204_928));
        assert_eq!(rows.last().unwrap().params, 1_290);
        let total: usize = rows.iter().map(|r| r.params).sum();
        assert_eq!(total, 225_034);
        let text = table(&crate::model::simple()).unwrap();
        assert!(
            text.contains("conv2d 32 3×3") && text.contains("225,034"),
            "{text}"
        );
    }

    #[test]
    fn a_residual_block_is_one_row() {
        let spec = crate::model::preset("resnet-small").unwrap();
        let rows = rows(&spec).unwrap();
        assert_eq!(rows.len(), spec.layers.len());
        assert!(rows.iter().any(|r| r.layer.starts_with("residual")));
    }
}
