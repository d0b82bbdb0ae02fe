//! The allocator a plugin's run starts on: the room its initial memory
//! already has, then the standard allocator.
//!
//! The agent runs a plugin on a fresh instance each time. Rust's standard
//! allocator on wasm32 (dlmalloc) only ever takes memory it grows itself,
//! so even a run that allocates a few bytes grows its linear memory, and
//! the host pays for that growth twice: making the new pages accessible,
//! then taking them away again when the instance's slot is reset (an
//! `mprotect` and a TLB flush on every CPU). Yet the initial memory holds
//! room the standard allocator never touches: from the end of the static
//! data (`__heap_base`) to the end of the initial pages, tens of KiB.
//!
//! [`InitialHeapFirst`] hands out that room first, bump by bump, and takes
//! memory from the standard allocator once it is used up. Freeing the last
//! block given out takes the bump back, growing or shrinking the last
//! block is done in place, and any other block freed in the room stays
//! spent until the run ends (an instance lives for one run): the room is
//! small and bounded, so that waste is too. Blocks from the standard
//! allocator go back to it as usual.
//!
//! It is the global allocator of a plugin built for `wasm32-unknown-unknown`
//! (single-threaded) with the default `initial-heap` feature. Not on the
//! WASI targets: their libc's allocator starts its heap in that same room.
//! A plugin that brings its own global allocator turns the feature off.
//! [`Room`] is the arithmetic, tested natively.

// Elsewhere, `Room` serves only the tests.
#![cfg_attr(
    not(all(
        target_arch = "wasm32",
        target_os = "unknown",
        not(target_feature = "atomics"),
        feature = "initial-heap"
    )),
    allow(dead_code)
)]

use core::alloc::Layout;

/// The bump arithmetic over the room `[start, end)`, `next` being the
/// first free byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    start: usize,
    end: usize,
    next: usize,
}

impl Room {
    /// The room `[start, end)`, all free.
    pub const fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            next: start,
        }
    }

    /// Whether `address` was given out from this room.
    pub fn holds(&self, address: usize) -> bool {
        (self.start..self.end).contains(&address)
    }

    /// The address of a new block for `layout`, if the room has space.
    pub fn allocate(&mut self, layout: Layout) -> Option<usize> {
        let at = self.next.checked_next_multiple_of(layout.align())?;
        let end = at.checked_add(layout.size())?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(at)
    }

    /// Give back the block at `address` of `size` bytes: the space is
    /// reused only when it was the last block given out.
    pub fn free(&mut self, address: usize, size: usize) {
        if address.checked_add(size) == Some(self.next) {
            self.next = address;
        }
    }

    /// Resize the block at `address` from `old_size` to `new_size` bytes
    /// in place, if it can be: a block shrinks where it is, and the last
    /// block given out grows while the room has space. `false` when it
    /// must move.
    pub fn resize_in_place(&mut self, address: usize, old_size: usize, new_size: usize) -> bool {
        let is_last = address.checked_add(old_size) == Some(self.next);
        if is_last {
            match address.checked_add(new_size) {
                Some(end) if end <= self.end => {
                    self.next = end;
                    true
                }
                _ => false,
            }
        } else {
            new_size <= old_size
        }
    }
}

#[cfg(all(
    target_arch = "wasm32",
    target_os = "unknown",
    not(target_feature = "atomics"),
    feature = "initial-heap"
))]
mod global {
    use super::Room;
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;
    use std::alloc::System;

    unsafe extern "C" {
        /// The end of the static data, set by the linker: where the
        /// initial memory's free room begins.
        static __heap_base: u8;
        /// The end of the initial memory, set by the linker: where the
        /// room ends, whatever grew the memory since.
        static __heap_end: u8;
    }

    const PAGE: usize = 64 << 10;

    /// See [the module](super).
    pub struct InitialHeapFirst {
        /// `None` until the first allocation measures the room.
        room: UnsafeCell<Option<Room>>,
    }

    // SAFETY: built only without the atomics feature, where a plugin has
    // one thread, so the cell is never reached from two at once.
    unsafe impl Sync for InitialHeapFirst {}

    impl InitialHeapFirst {
        pub const fn new() -> Self {
            Self {
                room: UnsafeCell::new(None),
            }
        }

        /// The room, from the linker's bounds (within the memory there is).
        #[allow(clippy::mut_from_ref)]
        fn room(&self) -> &mut Room {
            // SAFETY: one thread (above), and no reference to the room
            // outlives the allocator call that took it.
            let room = unsafe { &mut *self.room.get() };
            room.get_or_insert_with(|| {
                let start = &raw const __heap_base as usize;
                let memory = core::arch::wasm32::memory_size(0).saturating_mul(PAGE);
                let end = (&raw const __heap_end as usize).min(memory);
                Room::new(start, end.max(start))
            })
        }
    }

    // SAFETY: blocks from the room are disjoint (the bump only moves past
    // a block while it is live), inside the initial memory, aligned as
    // asked; every other block is the standard allocator's and goes back
    // to it.
    unsafe impl GlobalAlloc for InitialHeapFirst {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match self.room().allocate(layout) {
                Some(address) => address as *mut u8,
                // SAFETY: the caller's contract, passed on.
                None => unsafe { System.alloc(layout) },
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            match self.room().allocate(layout) {
                Some(address) => {
                    let block = address as *mut u8;
                    // SAFETY: the block was just given out, `size` long;
                    // a block taken back and given out again may hold old
                    // bytes, so it is cleared.
                    unsafe { block.write_bytes(0, layout.size()) };
                    block
                }
                // SAFETY: the caller's contract, passed on.
                None => unsafe { System.alloc_zeroed(layout) },
            }
        }

        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            let room = self.room();
            if room.holds(block as usize) {
                room.free(block as usize, layout.size());
            } else {
                // SAFETY: not the room's, so the standard allocator's.
                unsafe { System.dealloc(block, layout) }
            }
        }

        unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let room = self.room();
            if !room.holds(block as usize) {
                // SAFETY: the standard allocator's block, its contract.
                return unsafe { System.realloc(block, layout, new_size) };
            }
            if room.resize_in_place(block as usize, layout.size(), new_size) {
                return block;
            }
            // SAFETY: `realloc`'s contract makes this layout valid.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: as for `alloc`.
            let moved = unsafe { self.alloc(new_layout) };
            if !moved.is_null() {
                // SAFETY: two live, disjoint blocks, each at least this
                // long.
                unsafe {
                    core::ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size))
                };
                // SAFETY: the old block, given out by this allocator.
                unsafe { self.dealloc(block, layout) };
            }
            moved
        }
    }

    #[global_allocator]
    static ALLOCATOR: InitialHeapFirst = InitialHeapFirst::new();
}

#[cfg(test)]
mod tests {
    use super::Room;
    use core::alloc::Layout;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_inside_the_room() {
        let mut room = Room::new(1001, 2000);
        let mut blocks = Vec::new();
        for (size, align) in [(1, 1), (8, 8), (3, 2), (64, 16), (0, 4), (100, 32)] {
            let at = room.allocate(layout(size, align)).unwrap();
            assert_eq!(at % align, 0);
            assert!(at >= 1001 && at + size <= 2000);
            blocks.push((at, size));
        }
        for (i, &(a, a_len)) in blocks.iter().enumerate() {
            for &(b, b_len) in &blocks[i + 1..] {
                assert!(
                    a + a_len <= b || b + b_len <= a,
                    "{a}+{a_len} meets {b}+{b_len}"
                );
            }
        }
    }

    #[test]
    fn a_block_the_room_cannot_hold_is_refused_and_the_room_stays_usable() {
        let mut room = Room::new(0, 100);
        assert_eq!(room.allocate(layout(101, 1)), None);
        assert_eq!(room.allocate(layout(1, 1 << 12)), Some(0));
        assert_eq!(room.allocate(layout(isize::MAX as usize, 1)), None);
        assert_eq!(room.allocate(layout(99, 1)), Some(1));
        assert_eq!(room.allocate(layout(1, 1)), None);
        // An alignment past the end of the address space is refused too.
        let mut high = Room::new(usize::MAX - 10, usize::MAX);
        assert_eq!(high.allocate(layout(1, 1 << 20)), None);
    }

    #[test]
    fn only_the_last_block_freed_is_reused() {
        let mut room = Room::new(0, 100);
        let a = room.allocate(layout(10, 1)).unwrap();
        let b = room.allocate(layout(10, 1)).unwrap();
        room.free(a, 10);
        assert_eq!(room.allocate(layout(1, 1)), Some(20), "a's space is spent");
        room.free(20, 1);
        room.free(b, 10);
        assert_eq!(room.allocate(layout(10, 1)), Some(b));
    }

    #[test]
    fn the_last_block_grows_in_place_and_any_block_shrinks_in_place() {
        let mut room = Room::new(0, 100);
        let a = room.allocate(layout(10, 1)).unwrap();
        assert!(room.resize_in_place(a, 10, 50));
        assert_eq!(room.allocate(layout(1, 1)), Some(50));
        assert!(!room.resize_in_place(a, 50, 60), "a is no longer last");
        assert!(room.resize_in_place(a, 50, 5));
        assert!(room.resize_in_place(50, 1, 50));
        assert!(!room.resize_in_place(50, 50, 51), "past the room's end");
        assert!(room.holds(99) && !room.holds(100));
    }

    /// Random allocations, frees and resizes against a model: live blocks
    /// never overlap, and each keeps the bytes written into it.
    #[test]
    fn random_use_never_overlaps_live_blocks() {
        let mut memory = vec![0u8; 4096];
        let mut room = Room::new(0, memory.len());
        let mut live: Vec<(usize, usize, u8)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000u32 {
            let tag = (step % 251) as u8;
            match next() % 4 {
                0 | 1 => {
                    let size = (next() % 200) as usize;
                    let align = 1 << (next() % 5);
                    if let Some(at) = room.allocate(layout(size, align)) {
                        memory[at..at + size].fill(tag);
                        live.push((at, size, tag));
                    }
                }
                2 if !live.is_empty() => {
                    let (at, size, _) = live.swap_remove((next() as usize) % live.len());
                    room.free(at, size);
                }
                _ if !live.is_empty() => {
                    let index = (next() as usize) % live.len();
                    let (at, size, old_tag) = live[index];
                    let new_size = (next() % 300) as usize;
                    if room.resize_in_place(at, size, new_size) {
                        memory[at..at + new_size.min(size)]
                            .iter()
                            .for_each(|b| assert_eq!(*b, old_tag));
                        memory[at..at + new_size].fill(old_tag);
                        live[index].1 = new_size;
                    }
                }
                _ => {}
            }
            for &(at, size, tag) in &live {
                assert!(
                    memory[at..at + size].iter().all(|b| *b == tag),
                    "block at {at} was overwritten"
                );
            }
        }
    }
}
