//! Reading kernel data with offsets computed by userspace (architecture rule 9).
//!
//! `LAYOUT` lives in `.rodata`; the agent fills it in at load time and aya freezes the map, so the
//! verifier sees every offset as a constant. Reads go through `bpf_probe_read_kernel`: a failed
//! read yields `None`, never a fault.

use aya_ebpf::{EbpfContext, helpers::generated, programs::TracePointContext};
use core::ffi::c_void;
use sonde_common::layout::{ABSENT, KernelLayout, TP_RECORD_MAX};

#[unsafe(no_mangle)]
pub static LAYOUT: KernelLayout = KernelLayout::ABSENT;

/// One field of [`LAYOUT`]. Volatile so the compiler does not fold the all-absent initializer.
macro_rules! offset {
    ($field:ident) => {{
        // Expanded inside and outside unsafe blocks alike.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(&$crate::kernel::LAYOUT.$field) };
        value
    }};
}
pub(crate) use offset;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == ABSENT {
        return None;
    }
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    let ret = unsafe {
        generated::bpf_probe_read_kernel(
            out.as_mut_ptr().cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            (base + off as u64) as *const c_void,
        )
    };
    if ret < 0 {
        None
    } else {
        Some(unsafe { out.assume_init() })
    }
}

/// A copy of a tracepoint record's first bytes, so that its fields can be taken at offsets
/// known only at load time with a single helper call.
pub struct TpRecord {
    buf: [u8; TP_RECORD_MAX as usize],
}

impl TpRecord {
    #[inline(always)]
    pub const fn new() -> Self {
        Self {
            buf: [0; TP_RECORD_MAX as usize],
        }
    }

    /// Copies `size` bytes of the record behind `ctx`; false if the size is out of range (the
    /// agent never attaches with such a layout) or the read failed.
    #[inline(always)]
    pub fn fill(&mut self, ctx: &TracePointContext, size: u32) -> bool {
        if size == 0 || size > TP_RECORD_MAX {
            return false;
        }
        let ret = unsafe {
            generated::bpf_probe_read_kernel(
                self.buf.as_mut_ptr().cast::<c_void>(),
                size,
                ctx.as_ptr() as *const c_void,
            )
        };
        ret == 0
    }

    /// The `T` at byte `off` of the record.
    #[inline(always)]
    pub fn get<T: Copy>(&self, off: u32) -> Option<T> {
        if off == ABSENT || off as usize + core::mem::size_of::<T>() > self.buf.len() {
            return None;
        }
        Some(unsafe { core::ptr::read_unaligned(self.buf.as_ptr().add(off as usize).cast::<T>()) })
    }
}
