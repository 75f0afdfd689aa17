//! The one writer of fmnist's safetensors files (model files and checkpoints): f32
//! tensors and string metadata, byte-for-byte the same for the same contents.

use std::collections::HashMap;

use anyhow::{anyhow, bail};
use safetensors::{Dtype, tensor::TensorView};

/// A safetensors file of f32 tensors (name, shape, values) and string metadata, the same
/// bytes for the same contents (see [`sorted_header`]).
pub fn f32_safetensors(
    tensors: &[(String, &[usize], &[f32])],
    metadata: HashMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, data)| data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            Ok((
                name.as_str(),
                TensorView::new(Dtype::F32, shape.to_vec(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    sorted_header(safetensors::serialize(views, Some(metadata))?)
}

/// `safetensors` writes the metadata in a `HashMap`'s random order, so the same model
/// would give different bytes from run to run; this rewrites the header (the same JSON,
/// so the same length) with its keys sorted, making a file a pure function of its model.
fn sorted_header(mut bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    use std::collections::BTreeMap;
    let len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| anyhow!("safetensors wrote no header"))? as usize;
    let header = bytes
        .get(8..8 + len)
        .ok_or_else(|| anyhow!("safetensors wrote a short header"))?;
    let mut map: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)?;
    if let Some(meta) = map.get_mut("__metadata__") {
        let sorted: BTreeMap<String, serde_json::Value> = serde_json::from_value(meta.take())?;
        *meta = serde_json::to_value(sorted)?;
    }
    let mut json = serde_json::to_vec(&map)?;
    if json.len() > len {
        bail!("the sorted header is longer than the original");
    }
    json.resize(len, b' '); // the padding safetensors uses
    bytes[8..8 + len].copy_from_slice(&json);
    Ok(bytes)
}
