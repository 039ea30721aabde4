//! Member offsets of kernel structs, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`).
//!
//! Sonde needs about thirty offsets. General BTF crates materialise the whole type graph of
//! vmlinux (≈150,000 types, tens of MiB of heap) to answer that; this reader keeps the raw bytes
//! and one `u32` per type, resolves the few paths asked, and is dropped before the agent starts
//! capturing, which keeps the agent's peak RSS low. Format: `Documentation/bpf/btf.rst`.

use std::{io, path::Path};

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "kernel BTF not found at {path}: this kernel was built without CONFIG_DEBUG_INFO_BTF (or \
         the file given does not exist), and Sonde needs BTF to locate the kernel fields it \
         reads. Fix: run a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default of major \
         distributions since 2021), or pass --btf-path with the BTF of this exact kernel build \
         (e.g. from BTFHub)"
    )]
    Missing { path: String },
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("kernel BTF at {path} is malformed ({what}); please report this kernel version")]
    Malformed { path: String, what: &'static str },
}

const BTF_MAGIC: u16 = 0xeb9f;

// BTF kinds used here (the others only need their size to be skipped).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A member found by [`Btf::member`]: byte offset from the start of the outer struct and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Byte position of each type record, indexed by type id (id 0, `void`, has none).
    types: Vec<u32>,
    path: String,
}

struct TypeHeader {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` for ints, structs, unions, enums; `type` for pointers, typedefs, qualifiers.
    size_or_type: u32,
    /// Position of the kind-specific data that follows the header.
    extra: usize,
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                BtfError::Missing {
                    path: shown.clone(),
                }
            } else {
                BtfError::Read {
                    path: shown.clone(),
                    source,
                }
            }
        })?;
        Self::parse(data, shown)
    }

    pub fn parse(data: Vec<u8>, path: String) -> Result<Self, BtfError> {
        let bad = |what| BtfError::Malformed {
            path: path.clone(),
            what,
        };
        let u16_at = |pos: usize| {
            data.get(pos..pos + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        if u16_at(0) != Some(BTF_MAGIC) {
            return Err(bad("bad magic (not little-endian BTF)"));
        }
        let hdr_len = read_u32(&data, 4).ok_or_else(|| bad("short header"))? as usize;
        let field = |n: usize| read_u32(&data, 8 + 4 * n).map(|v| v as usize);
        let (Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (field(0), field(1), field(2), field(3))
        else {
            return Err(bad("short header"));
        };
        let types_range = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types_range.end > data.len() || strings.end > data.len() {
            return Err(bad("sections past the end of the data"));
        }
        let mut types = vec![0u32];
        let mut pos = types_range.start;
        while pos < types_range.end {
            types.push(u32::try_from(pos).map_err(|_| bad("type section too large"))?);
            let header = header_at(&data, pos).ok_or_else(|| bad("truncated type"))?;
            pos = header.extra + extra_len(&header).ok_or_else(|| bad("unknown type kind"))?;
        }
        if pos != types_range.end {
            return Err(bad("type section does not end on a type boundary"));
        }
        Ok(Self {
            data,
            strings,
            types,
            path,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = self.strings.start + off as usize;
        let bytes = self.data.get(start..self.strings.end).unwrap_or(&[]);
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..end]
    }

    fn header(&self, id: u32) -> Option<TypeHeader> {
        let pos = *self.types.get(id as usize)?;
        if id == 0 {
            return None;
        }
        header_at(&self.data, pos as usize)
    }

    /// Id of the struct (or union) called `name`; the first complete definition.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        (1..self.types.len() as u32).find(|&id| {
            self.header(id).is_some_and(|h| {
                (h.kind == KIND_STRUCT || h.kind == KIND_UNION)
                    && self.name(h.name_off) == name.as_bytes()
            })
        })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<(u32, TypeHeader)> {
        for _ in 0..32 {
            let h = self.header(id)?;
            match h.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = h.size_or_type;
                }
                _ => return Some((id, h)),
            }
        }
        None
    }

    /// Size in bytes of a type.
    fn size_of(&self, id: u32) -> Option<u32> {
        let (_, h) = self.resolve(id)?;
        match h.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Some(h.size_or_type)
            }
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let elem = read_u32(&self.data, h.extra)?;
                let count = read_u32(&self.data, h.extra + 8)?;
                self.size_of(elem)?.checked_mul(count)
            }
            _ => None,
        }
    }

    /// Finds `name` among the members of struct/union `id`, looking inside anonymous struct and
    /// union members as C does. Returns the byte offset and the member's type id.
    fn find_member(&self, id: u32, name: &[u8], depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let (_, h) = self.resolve(id)?;
        if h.kind != KIND_STRUCT && h.kind != KIND_UNION {
            return None;
        }
        for i in 0..h.vlen as usize {
            let at = h.extra + i * 12;
            let (m_name, m_type, m_off) = (
                read_u32(&self.data, at)?,
                read_u32(&self.data, at + 4)?,
                read_u32(&self.data, at + 8)?,
            );
            // With kind_flag the top 8 bits hold a bitfield size; we never read bitfields.
            let bit_off = if h.kind_flag {
                m_off & 0x00ff_ffff
            } else {
                m_off
            };
            if bit_off % 8 != 0 {
                continue;
            }
            let byte_off = bit_off / 8;
            let m_name = self.name(m_name);
            if m_name == name {
                return Some((byte_off, m_type));
            }
            if m_name.is_empty()
                && let Some((inner, ty)) = self.find_member(m_type, name, depth + 1)
            {
                return Some((byte_off + inner, ty));
            }
        }
        None
    }

    /// Offset and size of `path` (members separated by dots, e.g. `sk_cgrp_data.cgroup`) inside
    /// struct `strukt`.
    pub fn member(&self, strukt: &str, path: &str) -> Option<Member> {
        let mut id = self.struct_id(strukt)?;
        let mut offset = 0u32;
        for part in path.split('.') {
            let (off, ty) = self.find_member(id, part.as_bytes(), 0)?;
            offset += off;
            id = ty;
        }
        Some(Member {
            offset,
            size: self.size_of(id)?,
        })
    }

    /// Value of enumerator `name` of enum `enum_name` (e.g. `sock_flags`, `SOCK_DONE`).
    pub fn enum_value(&self, enum_name: &str, name: &str) -> Option<i64> {
        (1..self.types.len() as u32).find_map(|id| {
            let h = self.header(id)?;
            if (h.kind != KIND_ENUM && h.kind != KIND_ENUM64)
                || self.name(h.name_off) != enum_name.as_bytes()
            {
                return None;
            }
            let stride = if h.kind == KIND_ENUM { 8 } else { 12 };
            (0..h.vlen as usize).find_map(|i| {
                let at = h.extra + i * stride;
                if self.name(read_u32(&self.data, at)?) != name.as_bytes() {
                    return None;
                }
                let lo = read_u32(&self.data, at + 4)?;
                Some(if h.kind == KIND_ENUM {
                    lo as i32 as i64
                } else {
                    ((read_u32(&self.data, at + 8)? as u64) << 32 | lo as u64) as i64
                })
            })
        })
    }

    /// Readable description of a type, qualifiers dropped: `int`, `*struct sock`, `*void`.
    fn describe(&self, id: u32, depth: u32) -> String {
        if id == 0 {
            return "void".into();
        }
        let Some(h) = self.header(id) else {
            return "?".into();
        };
        if depth > 16 {
            return "?".into();
        }
        let name = String::from_utf8_lossy(self.name(h.name_off)).into_owned();
        match h.kind {
            KIND_PTR => format!("*{}", self.describe(h.size_or_type, depth + 1)),
            KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.describe(h.size_or_type, depth + 1)
            }
            KIND_STRUCT => format!("struct {name}"),
            KIND_UNION => format!("union {name}"),
            KIND_ENUM | KIND_ENUM64 => format!("enum {name}"),
            _ => name,
        }
    }

    /// Parameter types of a raw tracepoint, from its `btf_trace_<name>` typedef (a pointer to
    /// the probe's prototype, whose first parameter is the `void *` context).
    pub fn raw_tracepoint_params(&self, name: &str) -> Option<Vec<String>> {
        let typedef = format!("btf_trace_{name}");
        let id = (1..self.types.len() as u32).find(|&id| {
            self.header(id).is_some_and(|h| {
                h.kind == KIND_TYPEDEF && self.name(h.name_off) == typedef.as_bytes()
            })
        })?;
        let ptr = self.header(id)?;
        let proto = self.header(ptr.size_or_type)?;
        let proto = if proto.kind == KIND_PTR {
            self.header(proto.size_or_type)?
        } else {
            proto
        };
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        (0..proto.vlen as usize)
            .map(|i| {
                let ty = read_u32(&self.data, proto.extra + i * 8 + 4)?;
                Some(self.describe(ty, 0))
            })
            .collect()
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

fn read_u32(data: &[u8], pos: usize) -> Option<u32> {
    data.get(pos..pos + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn header_at(data: &[u8], pos: usize) -> Option<TypeHeader> {
    let name_off = read_u32(data, pos)?;
    let info = read_u32(data, pos + 4)?;
    let size_or_type = read_u32(data, pos + 8)?;
    Some(TypeHeader {
        name_off,
        kind: (info >> 24) & 0x1f,
        vlen: info & 0xffff,
        kind_flag: info >> 31 == 1,
        size_or_type,
        extra: pos + 12,
    })
}

/// Bytes of kind-specific data after a type header.
fn extra_len(h: &TypeHeader) -> Option<usize> {
    let vlen = h.vlen as usize;
    Some(match h.kind {
        KIND_INT => 4,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION => 12 * vlen,
        KIND_ENUM => 8 * vlen,
        KIND_FUNC_PROTO => 8 * vlen,
        KIND_VAR => 4,
        KIND_DATASEC => 12 * vlen,
        KIND_DECL_TAG => 4,
        KIND_ENUM64 => 12 * vlen,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct outer { int a; union { long b; int c; }; struct inner in; }`
    /// with `struct inner { char pad[3]; int d; }` and `enum e { X = 7 }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0long\0char\0outer\0a\0b\0c\0inner\0in\0d\0pad\0e\0X\0";
        let off = |s: &str| {
            let hay = std::str::from_utf8(strings).unwrap();
            hay.find(&format!("\0{s}\0")).unwrap() as u32 + 1
        };
        let mut types: Vec<u32> = Vec::new();
        let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
        // 1: int (size 4)
        types.extend([off("int"), info(KIND_INT, 0), 4, 32]);
        // 2: long (size 8)
        types.extend([off("long"), info(KIND_INT, 0), 8, 64]);
        // 3: char
        types.extend([off("char"), info(KIND_INT, 0), 1, 8]);
        // 4: anonymous union { long b; int c; }
        types.extend([0, info(KIND_UNION, 2), 8, off("b"), 2, 0, off("c"), 1, 0]);
        // 5: char[3]
        types.extend([0, info(KIND_ARRAY, 0), 0, 3, 1, 3]);
        // 6: struct inner { char pad[3]; int d; } (d at byte 4)
        types.extend([
            off("inner"),
            info(KIND_STRUCT, 2),
            8,
            off("pad"),
            5,
            0,
            off("d"),
            1,
            32,
        ]);
        // 7: struct outer { int a; union {..}; struct inner in; }
        types.extend([
            off("outer"),
            info(KIND_STRUCT, 3),
            24,
            off("a"),
            1,
            0,
            0,
            4,
            64,
            off("in"),
            6,
            128,
        ]);
        // 8: enum e { X = 7 }
        types.extend([off("e"), info(KIND_ENUM, 1), 4, off("X"), 7]);
        let type_bytes: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(BTF_MAGIC.to_le_bytes());
        out.extend([1u8, 0]);
        out.extend(24u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((type_bytes.len() as u32).to_le_bytes());
        out.extend((type_bytes.len() as u32).to_le_bytes());
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_direct_anonymous_and_nested_members() {
        let btf = Btf::parse(sample(), "test".into()).expect("valid sample");
        assert_eq!(
            btf.member("outer", "a"),
            Some(Member { offset: 0, size: 4 })
        );
        assert_eq!(
            btf.member("outer", "b"),
            Some(Member { offset: 8, size: 8 })
        );
        assert_eq!(
            btf.member("outer", "c"),
            Some(Member { offset: 8, size: 4 })
        );
        assert_eq!(
            btf.member("outer", "in.d"),
            Some(Member {
                offset: 20,
                size: 4
            })
        );
        assert_eq!(
            btf.member("outer", "in.pad"),
            Some(Member {
                offset: 16,
                size: 3
            })
        );
        assert_eq!(btf.member("outer", "missing"), None);
        assert_eq!(btf.member("nosuch", "a"), None);
        assert_eq!(btf.enum_value("e", "X"), Some(7));
        assert_eq!(btf.enum_value("e", "Y"), None);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(vec![], "t".into()).is_err());
        assert!(Btf::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0], "t".into()).is_err());
        let mut truncated = sample();
        truncated.truncate(40);
        assert!(Btf::parse(truncated, "t".into()).is_err());
        for cut in 0..sample().len() {
            let mut data = sample();
            data.truncate(cut);
            let _ = Btf::parse(data, "t".into());
        }
    }

    #[test]
    fn reads_this_kernel() {
        // The running kernel's BTF is part of the test environment (see README); its absence is
        // a failure, not a skip.
        let btf = Btf::from_kernel().expect("kernel BTF must be present on test machines");
        let tgid = btf.member("task_struct", "tgid").expect("task_struct.tgid");
        assert_eq!(tgid.size, 4);
        let fam = btf
            .member("sock", "__sk_common.skc_family")
            .expect("sock.__sk_common.skc_family");
        assert_eq!(fam.size, 2);
        assert_eq!(
            btf.raw_tracepoint_params("inet_sock_set_state").as_deref(),
            Some(&["*void", "*struct sock", "int", "int"].map(String::from)[..])
        );
        // enum sock_flags { SOCK_DEAD, SOCK_DONE, ... } has kept this order since Linux 2.6.
        assert_eq!(btf.enum_value("sock_flags", "SOCK_DONE"), Some(1));
        assert_eq!(btf.enum_value("sock_flags", "NO_SUCH_FLAG"), None);
    }
}
