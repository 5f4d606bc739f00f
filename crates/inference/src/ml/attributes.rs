//! Reading node attributes, including ml opset 3's `*_as_tensor` doubles.

use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn tensor_values(tensor: &TensorProto, name: &str) -> TractResult<Vec<f64>> {
    const FLOAT: i32 = 1;
    const DOUBLE: i32 = 11;
    if !tensor.double_data.is_empty() {
        return Ok(tensor.double_data.clone());
    }
    if !tensor.float_data.is_empty() {
        return Ok(tensor.float_data.iter().map(|&v| f64::from(v)).collect());
    }
    let raw = &tensor.raw_data;
    match tensor.data_type {
        DOUBLE => Ok(raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()),
        FLOAT => Ok(raw
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()),
        other => bail!("attribute {name} is a tensor of type {other}, not floats"),
    }
}

/// Float list `name`, or its `name_as_tensor` double form.
pub(crate) fn floats(node: &NodeProto, name: &str) -> TractResult<Option<Vec<f64>>> {
    if let Some(tensor) = attribute(node, &format!("{name}_as_tensor")).and_then(|a| a.t.as_ref()) {
        return tensor_values(tensor, name).map(Some);
    }
    Ok(attribute(node, name).map(|a| a.floats.iter().map(|&v| f64::from(v)).collect()))
}

/// Integer list `name`.
pub(crate) fn ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    attribute(node, name).map(|a| a.ints.as_slice())
}

/// Integer list `name`, which must be there.
pub(crate) fn required_ints<'a>(node: &'a NodeProto, name: &str) -> TractResult<&'a [i64]> {
    ints(node, name).ok_or_else(|| format_err!("{}: attribute {name} is missing", node.op_type))
}

/// Float list `name`, which must be there.
pub(crate) fn required_floats(node: &NodeProto, name: &str) -> TractResult<Vec<f64>> {
    floats(node, name)?.ok_or_else(|| format_err!("{}: attribute {name} is missing", node.op_type))
}

/// String list `name`.
pub(crate) fn strings(node: &NodeProto, name: &str) -> TractResult<Option<Vec<String>>> {
    attribute(node, name)
        .map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8(s.clone()).map_err(|e| format_err!("{name}: {e}")))
                .collect()
        })
        .transpose()
}

/// String `name`.
pub(crate) fn string(node: &NodeProto, name: &str) -> TractResult<Option<String>> {
    attribute(node, name)
        .map(|a| String::from_utf8(a.s.clone()).map_err(|e| format_err!("{name}: {e}")))
        .transpose()
}

/// Integer `name`.
pub(crate) fn int(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name).map(|a| a.i)
}

/// Float `name`.
pub(crate) fn float(node: &NodeProto, name: &str) -> Option<f32> {
    attribute(node, name).map(|a| a.f)
}
