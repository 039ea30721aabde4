//! cgroup lifecycle in the unified (v2) hierarchy: `cgroup/cgroup_mkdir` and `cgroup_rmdir`
//! carry the id and path of every cgroup as it is created or removed, so the agent can name a
//! container's cgroup even when the container is gone before userspace looks at it.

use aya_ebpf::{EbpfContext, helpers::generated, macros::tracepoint, programs::TracePointContext};
use core::{ffi::c_void, ptr::addr_of_mut};
use sonde_common::{
    layout::ABSENT,
    record::{CGROUP_PATH_LEN, CgroupRecord, RecordKind},
};

use crate::{emit, kernel::offset};

#[tracepoint]
pub fn sonde_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    record(&ctx, RecordKind::CgroupMkdir);
    0
}

#[tracepoint]
pub fn sonde_cgroup_rmdir(ctx: TracePointContext) -> u32 {
    record(&ctx, RecordKind::CgroupRmdir);
    0
}

#[inline(always)]
fn record(ctx: &TracePointContext, kind: RecordKind) {
    // Hierarchy 0 is the default (v2) hierarchy; v1 controllers on hybrid hosts have their own
    // numbers and their own ids, which are not what bpf_get_current_cgroup_id() returns.
    let root_off = offset!(tp_cgroup_root);
    if root_off == ABSENT || unsafe { ctx.read_at::<i32>(root_off as usize) } != Ok(0) {
        return;
    }
    let Ok(id) = (unsafe { ctx.read_at::<u64>(offset!(tp_cgroup_id) as usize) }) else {
        return;
    };
    let Some(mut entry) = emit::reserve::<CgroupRecord>(kind) else {
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).header = emit::header(kind);
        (*rec).id = id;
        (*rec).level = ctx
            .read_at::<i32>(offset!(tp_cgroup_level) as usize)
            .unwrap_or(-1) as u32;
        (*rec)._pad0 = 0;
        (*rec).path_len = 0;
        // path: a __data_loc field (low 16 bits: offset in the record, high: length).
        if let Ok(loc) = ctx.read_at::<u32>(offset!(tp_cgroup_path) as usize) {
            let src = (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize);
            let n = generated::bpf_probe_read_kernel_str(
                addr_of_mut!((*rec).path).cast::<c_void>(),
                CGROUP_PATH_LEN as u32,
                src.cast::<c_void>(),
            );
            if n > 1 && n <= CGROUP_PATH_LEN as i64 {
                (*rec).path_len = (n - 1) as u16;
            }
        }
    }
    emit::submit(entry);
}
