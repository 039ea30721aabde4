//! Reading kernel data with offsets computed by userspace (architecture rule 9).
//!
//! `LAYOUT` lives in `.rodata`; the agent fills it in at load time and aya freezes the map, so the
//! verifier sees every offset as a constant. Reads go through `bpf_probe_read_kernel`: a failed
//! read yields `None`, never a fault.

use aya_ebpf::helpers::generated;
use core::ffi::c_void;
use sonde_common::layout::{ABSENT, KernelLayout, WINDOW_MAX};

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

/// A copy of the first bytes of a kernel object, so that several of its fields can be taken at
/// offsets known only at load time with a single helper call.
pub struct Window {
    buf: [u8; WINDOW_MAX as usize],
}

impl Window {
    #[inline(always)]
    pub const fn new() -> Self {
        Self {
            buf: [0; WINDOW_MAX as usize],
        }
    }

    /// Copies `size` bytes from kernel address `src`; false if the size is out of range (the
    /// agent never loads such a layout) or the read failed.
    #[inline(always)]
    pub fn fill(&mut self, src: u64, size: u32) -> bool {
        if src == 0 || size == 0 || size > WINDOW_MAX {
            return false;
        }
        let ret = unsafe {
            generated::bpf_probe_read_kernel(
                self.buf.as_mut_ptr().cast::<c_void>(),
                size,
                src as *const c_void,
            )
        };
        ret == 0
    }

    /// The `T` at byte `off` of the window.
    #[inline(always)]
    pub fn get<T: Copy>(&self, off: u32) -> Option<T> {
        if off == ABSENT || off as usize + core::mem::size_of::<T>() > self.buf.len() {
            return None;
        }
        Some(unsafe { core::ptr::read_unaligned(self.buf.as_ptr().add(off as usize).cast::<T>()) })
    }
}
