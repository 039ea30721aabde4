//! Raw ring buffer bytes → typed [`Event`]: a bounds-checked copy into a fixed-size record,
//! no heap allocation.

use sonde_common::record::{ConnRecord, ExecRecord, ExitRecord, ForkRecord, Header, RecordKind};

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
}

fn copy<T: aya::Pod>(data: &[u8], kind: RecordKind) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if data.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            need,
            len: data.len(),
        });
    }
    // SAFETY: `data` holds at least size_of::<T>() bytes and T is Pod (any bit pattern is
    // valid); read_unaligned makes no alignment assumption.
    Ok(unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

pub fn decode(data: &[u8]) -> Result<Event, DecodeError> {
    if data.len() < std::mem::size_of::<Header>() {
        return Err(DecodeError::Short { len: data.len() });
    }
    let raw_kind = u16::from_ne_bytes([data[0], data[1]]);
    let kind = RecordKind::from_u16(raw_kind).ok_or(DecodeError::UnknownKind { kind: raw_kind })?;
    Ok(match kind {
        RecordKind::Exec => Event::Exec(copy::<ExecRecord>(data, kind)?),
        RecordKind::Fork => Event::Fork(copy::<ForkRecord>(data, kind)?),
        RecordKind::Exit => Event::Exit(copy::<ExitRecord>(data, kind)?),
        RecordKind::ConnOpen | RecordKind::ConnClose | RecordKind::ConnFail => {
            let phase = match kind {
                RecordKind::ConnOpen => ConnPhase::Open,
                RecordKind::ConnClose => ConnPhase::Close,
                _ => ConnPhase::Fail,
            };
            Event::Conn(ConnEvent {
                phase,
                record: copy::<ConnRecord>(data, kind)?,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_common::record::TaskIdentity;

    fn bytes_of<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: T is Pod; we only read its bytes.
        unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
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
        let bytes = bytes_of(&exit);
        match decode(&bytes) {
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
        let mut unknown = bytes.clone();
        unknown[0] = 99;
        assert!(matches!(
            decode(&unknown),
            Err(DecodeError::UnknownKind { kind: 99 })
        ));
    }
}
