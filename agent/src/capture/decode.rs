//! Raw ring buffer bytes → typed [`Event`]: a bounds- and alignment-checked view of the record
//! in place. No copy, no heap allocation; the event lives as long as the ring buffer item.

use sonde_common::record::{
    CgroupRecord, ConnRecord, ExecRecord, ExitRecord, ForkRecord, Header, RecordKind,
};

use crate::event::{ConnEvent, ConnPhase, Event};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u16 },
    #[error("record kind {kind:?} needs {need} bytes, got {len}")]
    Truncated {
        kind: RecordKind,
        need: usize,
        len: usize,
    },
    #[error("record kind {kind:?} is not 8-byte aligned in the ring buffer")]
    Misaligned { kind: RecordKind },
}

fn view<T: aya::Pod>(data: &[u8], kind: RecordKind) -> Result<&T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if data.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            need,
            len: data.len(),
        });
    }
    if !(data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(DecodeError::Misaligned { kind });
    }
    // SAFETY: `data` holds at least size_of::<T>() bytes at an address aligned for T, and T is
    // Pod (every bit pattern is a valid value); the borrow keeps the bytes alive and unchanged.
    Ok(unsafe { &*data.as_ptr().cast::<T>() })
}

pub fn decode(data: &[u8]) -> Result<Event<'_>, DecodeError> {
    if data.len() < std::mem::size_of::<Header>() {
        return Err(DecodeError::Short { len: data.len() });
    }
    let raw_kind = u16::from_ne_bytes([data[0], data[1]]);
    let kind = RecordKind::from_u16(raw_kind).ok_or(DecodeError::UnknownKind { kind: raw_kind })?;
    Ok(match kind {
        RecordKind::Exec => Event::Exec(view::<ExecRecord>(data, kind)?),
        RecordKind::Fork => Event::Fork(view::<ForkRecord>(data, kind)?),
        RecordKind::Exit => Event::Exit(view::<ExitRecord>(data, kind)?),
        RecordKind::CgroupMkdir | RecordKind::CgroupRmdir => Event::Cgroup {
            record: view::<CgroupRecord>(data, kind)?,
            removed: kind == RecordKind::CgroupRmdir,
        },
        RecordKind::ConnOpen | RecordKind::ConnClose | RecordKind::ConnFail => {
            let phase = match kind {
                RecordKind::ConnOpen => ConnPhase::Open,
                RecordKind::ConnClose => ConnPhase::Close,
                _ => ConnPhase::Fail,
            };
            Event::Conn(ConnEvent {
                phase,
                record: view::<ConnRecord>(data, kind)?,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_common::record::TaskIdentity;

    /// Bytes at an 8-aligned address, as the ring buffer delivers them.
    #[repr(C, align(8))]
    struct Aligned([u8; 128]);

    fn aligned_copy<T: aya::Pod>(value: &T) -> Box<Aligned> {
        let mut buf = Box::new(Aligned([0; 128]));
        // SAFETY: T is Pod and fits in the buffer; we only copy its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        buf.0[..bytes.len()].copy_from_slice(bytes);
        buf
    }

    #[test]
    fn decodes_each_kind_and_rejects_bad_input() {
        let exit = ExitRecord {
            header: Header {
                kind: RecordKind::Exit as u16,
                _pad0: 0,
                cpu: 1,
                ts_ns: 42,
            },
            task: TaskIdentity {
                pid: 7,
                ..TaskIdentity::UNKNOWN
            },
            exit_code: 3 << 8,
            _pad0: 0,
        };
        let buf = aligned_copy(&exit);
        let bytes = &buf.0[..std::mem::size_of::<ExitRecord>()];
        match decode(bytes) {
            Ok(Event::Exit(r)) => {
                assert_eq!(r.task.pid, 7);
                assert_eq!(r.exit_code, 0x300);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode(&bytes[..8]),
            Err(DecodeError::Short { len: 8 })
        ));
        assert!(matches!(
            decode(&bytes[..40]),
            Err(DecodeError::Truncated {
                need: 72,
                len: 40,
                ..
            })
        ));
        // The same record 4 bytes off an 8-byte boundary.
        let mut shifted = Box::new(Aligned([0; 128]));
        shifted.0[4..76].copy_from_slice(bytes);
        assert!(matches!(
            decode(&shifted.0[4..76]),
            Err(DecodeError::Misaligned {
                kind: RecordKind::Exit
            })
        ));
        let mut unknown = aligned_copy(&exit);
        unknown.0[0] = 99;
        assert!(matches!(
            decode(&unknown.0[..72]),
            Err(DecodeError::UnknownKind { kind: 99 })
        ));
    }
}
