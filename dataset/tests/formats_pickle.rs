//! Restricted pickle reader and writer: Python-made pickles of every protocol, hostile pickles.

mod formats_common;

use std::path::Path;

use formats_common::hex;
use idflow_dataset::formats::pickle::{self, AllowList, BytesStyle, Value};
use idflow_dataset::formats::FormatError;

/// `pickle.dumps(obj, protocol=p)` by CPython 3.11 for p = 0..5, where
/// `obj = {"a": [1, -2, 300, 70000, -(2**40), 2**70, 1.5, None, True, False],
///         "b": (b"\x00\xffxy", "h\u00e9llo\u4e16"), "c": {"nested": ()}, 7: frozenset(), "e": {1}}`.
const PY_PICKLES: [&str; 6] = [
    "286470300a56610a70310a286c70320a49310a61492d320a61493330300a614937303030300a614c2d313039393531313632373737364c0a614c313138303539313632303731373431313330333432344c0a6146312e350a614e614930310a614930300a617356620a70330a28635f636f646563730a656e636f64650a70340a28565c7530303030ff78790a70350a566c6174696e310a70360a7470370a5270380a5668e96c6c6f5c75346531360a70390a747031300a7356630a7031310a28647031320a566e65737465640a7031330a2874737349370a635f5f6275696c74696e5f5f0a66726f7a656e7365740a7031340a28286c7031350a747031360a527031370a7356650a7031380a635f5f6275696c74696e5f5f0a7365740a7031390a28286c7032300a49310a61747032310a527032320a732e",
    "7d71002858010000006171015d7102284b014afeffffff4d2c014a701101004c2d313039393531313632373737364c0a4c313138303539313632303731373431313330333432344c0a473ff80000000000004e4930310a4930300a65580100000062710328635f636f646563730a656e636f64650a710428580500000000c3bf7879710558060000006c6174696e317106747107527108580900000068c3a96c6c6fe4b896710974710a580100000063710b7d710c58060000006e6573746564710d29734b07635f5f6275696c74696e5f5f0a66726f7a656e7365740a710e285d710f7471105271115801000000657112635f5f6275696c74696e5f5f0a7365740a7113285d71144b0161747115527116752e",
    "80027d71002858010000006171015d7102284b014afeffffff4d2c014a701101008a060000000000ff8a09000000000000000040473ff80000000000004e8889655801000000627103635f636f646563730a656e636f64650a7104580500000000c3bf7879710558060000006c6174696e317106867107527108580900000068c3a96c6c6fe4b896710986710a580100000063710b7d710c58060000006e6573746564710d29734b07635f5f6275696c74696e5f5f0a66726f7a656e7365740a710e5d710f8571105271115801000000657112635f5f6275696c74696e5f5f0a7365740a71135d71144b0161857115527116752e",
    "80037d71002858010000006171015d7102284b014afeffffff4d2c014a701101008a060000000000ff8a09000000000000000040473ff80000000000004e8889655801000000627103430400ff78797104580900000068c3a96c6c6fe4b896710586710658010000006371077d710858060000006e6573746564710929734b07636275696c74696e730a66726f7a656e7365740a710a5d710b85710c52710d580100000065710e636275696c74696e730a7365740a710f5d71104b0161857111527112752e",
    "80049574000000000000007d94288c0161945d94284b014afeffffff4d2c014a701101008a060000000000ff8a09000000000000000040473ff80000000000004e8889658c016294430400ff7879948c0968c3a96c6c6fe4b8969486948c0163947d948c066e65737465649429734b072891948c0165948f94284b0190752e",
    "80059574000000000000007d94288c0161945d94284b014afeffffff4d2c014a701101008a060000000000ff8a09000000000000000040473ff80000000000004e8889658c016294430400ff7879948c0968c3a96c6c6fe4b8969486948c0163947d948c066e65737465649429734b072891948c0165948f94284b0190752e",
];

fn py_allow() -> AllowList {
    AllowList::new(&["_codecs.encode", "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset"])
}

fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.as_mapping().unwrap().iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v).unwrap_or_else(|| panic!("no key {key}"))
}

#[test]
fn reads_python_pickles_of_every_protocol() {
    for (p, h) in PY_PICKLES.iter().enumerate() {
        let v = pickle::load(&hex(h), Path::new(&format!("proto{p}.pkl")), &py_allow()).unwrap_or_else(|e| panic!("protocol {p}: {e}"));
        let items = v.as_mapping().unwrap();
        assert_eq!(items.len(), 5, "protocol {p}");
        let a = get(&v, "a").as_seq().unwrap();
        assert_eq!(a[0], Value::Int(1));
        assert_eq!(a[1], Value::Int(-2));
        assert_eq!(a[2], Value::Int(300));
        assert_eq!(a[3], Value::Int(70000));
        assert_eq!(a[4], Value::Int(-(1i64 << 40)));
        // 2**70 as minimal two's complement little-endian
        let mut big = vec![0u8; 9];
        big[8] = 0x40;
        assert_eq!(a[5], Value::BigInt(big), "protocol {p}");
        assert_eq!(a[6], Value::Float(1.5));
        assert_eq!(a[7], Value::None);
        assert_eq!(a[8], Value::Bool(true));
        assert_eq!(a[9], Value::Bool(false));
        let b = get(&v, "b").as_seq().unwrap();
        assert_eq!(pickle::value_bytes(&b[0]).unwrap(), b"\x00\xffxy", "protocol {p}");
        assert_eq!(b[1], Value::Str("h\u{e9}llo\u{4e16}".into()));
        let c = get(&v, "c");
        assert_eq!(get(c, "nested"), &Value::Tuple(vec![]));
        assert!(items.iter().any(|(k, _)| *k == Value::Int(7)));
    }
}

#[test]
fn writer_round_trips_in_both_byte_styles() {
    let v = Value::Tuple(vec![
        Value::List(vec![Value::Bytes(vec![0xff, 0xd8, 0, 1, 2, 0x80]), Value::Bytes(vec![7u8; 300]), Value::Bytes(vec![])]),
        Value::List(vec![Value::Bool(true), Value::Bool(false)]),
        Value::Dict(vec![
            (Value::Str("k".into()), Value::Int(-5)),
            (Value::Int(1 << 40), Value::Float(-0.25)),
            (Value::Int(65535), Value::None),
        ]),
    ]);
    for style in [BytesStyle::CodecsEncode, BytesStyle::Py2Str] {
        let data = pickle::dumps(&v, style).unwrap();
        assert_eq!(&data[..2], &[0x80, 2]);
        let back = pickle::load(&data, Path::new("rt.pkl"), &AllowList::new(&["_codecs.encode"])).unwrap();
        let seq = back.as_seq().unwrap();
        let imgs: Vec<Vec<u8>> = seq[0].as_seq().unwrap().iter().map(|b| pickle::value_bytes(b).unwrap()).collect();
        assert_eq!(imgs[0], vec![0xff, 0xd8, 0, 1, 2, 0x80]);
        assert_eq!(imgs[1], vec![7u8; 300]);
        assert_eq!(imgs[2], Vec::<u8>::new());
        assert_eq!(seq[1], v.as_seq().unwrap()[1]);
        assert_eq!(seq[2], v.as_seq().unwrap()[2]);
    }
}

#[test]
fn os_system_is_rejected_with_file_offset_and_name() {
    // cos\nsystem\n(S'echo pwned'\ntR.  -- the classic protocol 0 exploit
    let data = b"cos\nsystem\n(S'echo pwned'\ntR.";
    let err = pickle::load(data, Path::new("evil.pkl"), &AllowList::new(&["collections.OrderedDict"])).unwrap_err();
    match &err {
        FormatError::ForbiddenGlobal { global, offset, .. } => {
            assert_eq!(global, "os.system");
            assert_eq!(*offset, 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("evil.pkl") && msg.contains("os.system") && msg.contains("byte 0"), "{msg}");

    // protocol 4 STACK_GLOBAL spelling of builtins.eval, after a PROTO and FRAME
    let mut p4 = vec![0x80, 4, 0x95];
    let body = b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x85R.";
    p4.extend_from_slice(&(body.len() as u64).to_le_bytes());
    p4.extend_from_slice(body);
    let err = pickle::load(&p4, Path::new("evil4.pkl"), &AllowList::none()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("builtins.eval") && msg.contains("STACK_GLOBAL") && msg.contains("byte 29"), "{msg}");

    // posix.system through INST
    let inst = b"(S'ls'\nipposix\nsystem\n.";
    let err = pickle::load(inst, Path::new("evil0.pkl"), &AllowList::none()).unwrap_err();
    assert!(err.to_string().contains("posix.system"), "{err}");
}

#[test]
fn bad_opcodes_and_truncation_are_errors_with_offsets() {
    let err = pickle::load(b"\x80\x02]q\x00\xff.", Path::new("x.pkl"), &AllowList::none()).unwrap_err();
    assert!(matches!(err, FormatError::PickleOpcode { offset: 5, opcode: 0xff, .. }), "{err:?}");
    assert!(err.to_string().contains("x.pkl"));
    // extension registry opcodes are refused, not guessed
    let err = pickle::load(b"\x80\x02\x82\x01.", Path::new("x.pkl"), &AllowList::none()).unwrap_err();
    assert!(err.to_string().contains("EXT1"), "{err}");
    // truncated BINBYTES length far beyond the file: error, no allocation
    let err = pickle::load(b"\x80\x03B\xff\xff\xff\x7f", Path::new("t.pkl"), &AllowList::none()).unwrap_err();
    assert!(matches!(err, FormatError::Corrupt { offset: 2, .. }), "{err:?}");
    let err = pickle::load(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff", Path::new("t.pkl"), &AllowList::none()).unwrap_err();
    assert!(err.to_string().contains("t.pkl"), "{err}");
    // no STOP
    let err = pickle::load(b"\x80\x02N", Path::new("t.pkl"), &AllowList::none()).unwrap_err();
    assert!(err.to_string().contains("STOP"), "{err}");
    // stack underflow, memo miss
    assert!(pickle::load(b"R.", Path::new("t.pkl"), &AllowList::none()).is_err());
    assert!(pickle::load(b"h\x05.", Path::new("t.pkl"), &AllowList::none()).is_err());
    // every prefix of a valid pickle fails cleanly
    let full = hex(PY_PICKLES[2]);
    for n in 0..full.len() {
        assert!(pickle::load(&full[..n], Path::new("p.pkl"), &py_allow()).is_err(), "prefix {n}");
    }
}

#[test]
fn memo_aliasing_sees_later_mutation() {
    // d = {}; memo[0] = d; [d, d] built before d is filled; then d["k"] = 1
    let data = b"\x80\x02}q\x00h\x00h\x00\x86q\x01h\x00X\x01\x00\x00\x00kK\x01s0h\x01.";
    let v = pickle::load(data, Path::new("m.pkl"), &AllowList::none()).unwrap();
    let pair = v.as_seq().unwrap();
    for d in pair {
        assert_eq!(d.as_mapping().unwrap().len(), 1);
    }
}

#[test]
fn hostile_structures_fail_without_crashing() {
    // 100k nested 1-tuples: must error, not overflow the stack
    let mut deep = vec![0x80, 2, b']'];
    deep.extend(std::iter::repeat_n(0x85u8, 100_000));
    deep.push(b'.');
    let err = pickle::load(&deep, Path::new("deep.pkl"), &AllowList::none()).unwrap_err();
    assert!(err.to_string().contains("deeper"), "{err}");
    // a list containing itself
    let cyc = b"\x80\x02]q\x00h\x00a.";
    assert!(pickle::load(cyc, Path::new("cyc.pkl"), &AllowList::none()).is_err());
    // exponential sharing: x = [x, x] 60 times
    let mut exp = vec![0x80, 2, b']'];
    for _ in 0..60 {
        exp.extend_from_slice(b"q\x00h\x00\x86");
    }
    exp.push(b'.');
    let err = pickle::load(&exp, Path::new("exp.pkl"), &AllowList::none()).unwrap_err();
    assert!(err.to_string().contains("too many"), "{err}");
}
