//! The binary tensor data extension (Triton's, which the stock `tritonclient` uses by default):
//! the body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
//! tensors, in input order, each `parameters.binary_data_size` bytes, little-endian and
//! row-major; BOOL is one byte, a BYTES element is a 4-byte length then the bytes.

use serde_json::Value;

/// Encodes JSON elements (an output tensor's data, flattened) as one binary tensor.
pub(crate) fn encode(datatype: &str, elements: &[Value]) -> Result<Vec<u8>, String> {
    let number = |v: &Value| {
        v.as_f64()
            .ok_or_else(|| format!("{v} is not a {datatype} element"))
    };
    let integer = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .ok_or_else(|| format!("{v} is not a {datatype} element"))
    };
    let mut out = Vec::with_capacity(elements.len() * 8);
    for v in elements {
        match datatype {
            "BOOL" => out.push(u8::from(match v.as_bool() {
                Some(b) => b,
                None => integer(v)? != 0,
            })),
            "INT8" | "UINT8" => out.push(integer(v)? as u8),
            "INT16" | "UINT16" => out.extend_from_slice(&(integer(v)? as u16).to_le_bytes()),
            "INT32" | "UINT32" => out.extend_from_slice(&(integer(v)? as u32).to_le_bytes()),
            "INT64" | "UINT64" => out.extend_from_slice(&integer(v)?.to_le_bytes()),
            "FP32" => out.extend_from_slice(&(number(v)? as f32).to_le_bytes()),
            "FP64" => out.extend_from_slice(&number(v)?.to_le_bytes()),
            "BYTES" => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let length = u32::try_from(text.len())
                    .map_err(|_| "a BYTES element over 4 GiB".to_owned())?;
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
            other => return Err(format!("cannot encode {other} as binary")),
        }
    }
    Ok(out)
}

/// Decodes one binary tensor into JSON elements (numbers, booleans or strings).
pub(crate) fn decode(datatype: &str, bytes: &[u8], name: &str) -> Result<Vec<Value>, String> {
    fn fixed<const N: usize>(
        bytes: &[u8],
        name: &str,
        datatype: &str,
        f: impl Fn([u8; N]) -> Value,
    ) -> Result<Vec<Value>, String> {
        if !bytes.len().is_multiple_of(N) {
            return Err(format!(
                "input {name}: {} bytes is not a whole number of {datatype} elements",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|chunk| {
                let mut array = [0u8; N];
                array.copy_from_slice(chunk);
                f(array)
            })
            .collect())
    }
    match datatype {
        "BOOL" => Ok(bytes.iter().map(|b| Value::Bool(*b != 0)).collect()),
        "UINT8" => Ok(bytes.iter().map(|b| Value::from(*b)).collect()),
        "INT8" => Ok(bytes
            .iter()
            .map(|b| Value::from(i8::from_le_bytes([*b])))
            .collect()),
        "UINT16" => fixed::<2>(bytes, name, datatype, |b| {
            Value::from(u16::from_le_bytes(b))
        }),
        "INT16" => fixed::<2>(bytes, name, datatype, |b| {
            Value::from(i16::from_le_bytes(b))
        }),
        "UINT32" => fixed::<4>(bytes, name, datatype, |b| {
            Value::from(u32::from_le_bytes(b))
        }),
        "INT32" => fixed::<4>(bytes, name, datatype, |b| {
            Value::from(i32::from_le_bytes(b))
        }),
        "UINT64" => fixed::<8>(bytes, name, datatype, |b| {
            Value::from(u64::from_le_bytes(b))
        }),
        "INT64" => fixed::<8>(bytes, name, datatype, |b| {
            Value::from(i64::from_le_bytes(b))
        }),
        "FP32" => fixed::<4>(bytes, name, datatype, |b| {
            serde_json::Number::from_f64(f64::from(f32::from_le_bytes(b)))
                .map_or(Value::Null, Value::Number)
        }),
        "FP64" => fixed::<8>(bytes, name, datatype, |b| {
            serde_json::Number::from_f64(f64::from_le_bytes(b)).map_or(Value::Null, Value::Number)
        }),
        "BYTES" => {
            let mut out = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(format!("input {name}: truncated BYTES element length"));
                }
                let (head, tail) = rest.split_at(4);
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                if tail.len() < len {
                    return Err(format!(
                        "input {name}: BYTES element of {len} bytes is truncated"
                    ));
                }
                let (element, tail) = tail.split_at(len);
                out.push(Value::String(String::from_utf8_lossy(element).into_owned()));
                rest = tail;
            }
            Ok(out)
        }
        other => Err(format!(
            "input {name}: datatype {other} is not supported in binary form"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_little_endian_tensors() {
        let fp32: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            decode("FP32", &fp32, "x"),
            Ok(vec![Value::from(1.5), Value::from(-2.0)])
        );
        let int64: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            decode("INT64", &int64, "x"),
            Ok(vec![Value::from(7), Value::from(-1)])
        );
        let mut bytes = 2u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"hi");
        bytes.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            decode("BYTES", &bytes, "x"),
            Ok(vec![Value::from("hi"), Value::from("")])
        );
        assert!(decode("FP64", &[0u8; 7], "x").is_err());
        assert!(decode("BYTES", &[5, 0, 0, 0, b'a'], "x").is_err());
        assert_eq!(
            decode("BOOL", &[0, 1], "x"),
            Ok(vec![Value::Bool(false), Value::Bool(true)])
        );
    }

    #[test]
    fn encodes_what_it_decodes() {
        for (datatype, values) in [
            ("FP32", json!([1.5, -2.25, 0.0])),
            ("FP64", json!([0.1, 1e300])),
            ("INT64", json!([-3, 9_007_199_254_740_993_i64])),
            ("INT32", json!([7, -7])),
            ("BOOL", json!([true, false])),
            ("BYTES", json!(["yes", "", "naïve"])),
        ] {
            let elements = values.as_array().expect("array").clone();
            let bytes = encode(datatype, &elements).expect("encodes");
            assert_eq!(
                decode(datatype, &bytes, "t").expect("decodes"),
                elements,
                "{datatype}"
            );
        }
        assert!(encode("FP32", &[json!("x")]).is_err());
    }

    const DATATYPES: [&str; 13] = [
        "BOOL", "INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "FP16",
        "FP32", "FP64", "BYTES",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Whatever a client sends as a binary tensor, decoding answers elements or a message.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            datatype in proptest::sample::select(DATATYPES.to_vec()),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            if let Ok(elements) = decode(datatype, &bytes, "x") {
                // Accepted bytes re-encode to a tensor of the same size (BYTES: the same bytes).
                if let Ok(again) = encode(datatype, &elements) {
                    proptest::prop_assert_eq!(again.len(), bytes.len());
                }
            }
        }

        #[test]
        fn doubles_round_trip(values in proptest::collection::vec(-1e300f64..1e300, 0..64)) {
            let elements: Vec<Value> = values.iter().map(|v| json!(v)).collect();
            let bytes = encode("FP64", &elements).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(decode("FP64", &bytes, "x"), Ok(elements));
        }
    }
}
