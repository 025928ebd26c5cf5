//! Raw BPF syscalls for a program and maps fluxgate did not load (xdp-filter's).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const PROG_TEST_RUN: libc::c_long = 10;
const MAP_UPDATE_ELEM: libc::c_long = 2;
const PROG_GET_FD_BY_ID: libc::c_long = 13;
const MAP_GET_FD_BY_ID: libc::c_long = 14;
const OBJ_GET_INFO_BY_FD: libc::c_long = 15;

fn sys<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, valid for
    // reads and writes of its size; unused tail fields are zero.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd(r: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a fresh fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

#[repr(C)]
#[derive(Default)]
struct ById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// BPF_PROG_GET_FD_BY_ID.
pub fn prog_fd(id: u32) -> io::Result<OwnedFd> {
    sys(
        PROG_GET_FD_BY_ID,
        &mut ById {
            id,
            ..ById::default()
        },
    )
    .map(fd)
}

/// BPF_MAP_GET_FD_BY_ID.
pub fn map_fd(id: u32) -> io::Result<OwnedFd> {
    sys(
        MAP_GET_FD_BY_ID,
        &mut ById {
            id,
            ..ById::default()
        },
    )
    .map(fd)
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn info(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    sys(OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The ids of the maps a program uses (`struct bpf_prog_info`: nr_map_ids at 52,
/// map_ids pointer at 56).
pub fn prog_map_ids(fd: &OwnedFd) -> io::Result<Vec<u32>> {
    let mut buf = [0u8; 256];
    info(fd, &mut buf)?;
    let mut ids = vec![0u32; u32_at(&buf, 52) as usize];
    let mut buf = [0u8; 256];
    buf[52..56].copy_from_slice(&(ids.len() as u32).to_ne_bytes());
    buf[56..64].copy_from_slice(&(ids.as_mut_ptr() as u64).to_ne_bytes());
    info(fd, &mut buf)?;
    Ok(ids)
}

/// A map's name (`struct bpf_map_info`: name[16] at 24).
pub fn map_name(fd: &OwnedFd) -> io::Result<String> {
    let mut buf = [0u8; 128];
    info(fd, &mut buf)?;
    let name = &buf[24..40];
    let end = name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

#[repr(C)]
#[derive(Default)]
struct UpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// BPF_MAP_UPDATE_ELEM (BPF_ANY).
pub fn update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = UpdateAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..UpdateAttr::default()
    };
    sys(MAP_UPDATE_ELEM, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// BPF_PROG_TEST_RUN: `(verdict, kernel-reported mean ns per run)`.
pub fn test_run(prog: &OwnedFd, frame: &[u8], repeat: u32) -> io::Result<(u32, u32)> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    sys(PROG_TEST_RUN, &mut attr)?;
    Ok((attr.retval, attr.duration))
}

/// Possible CPUs (per-CPU map values hold one slot per possible CPU).
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .expect("/sys/devices/system/cpu/possible");
    text.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().expect("cpu") - a.parse::<usize>().expect("cpu") + 1,
            None => 1,
        })
        .sum()
}
