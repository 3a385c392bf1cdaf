//! A small slab: values stored by a reusable index, with a free list.
//!
//! Each slot also counts how many times it has been filled, so a handle made of
//! `(index, generation)` can tell a live value from a later one reusing the same slot.

#[derive(Debug)]
enum Slot<T> {
    Full(T),
    /// Vacant; holds the next vacant index, forming the free list.
    Vacant(Option<usize>),
}

/// A vector of slots with O(1) insert and remove.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<(u64, Slot<T>)>,
    free_head: Option<usize>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free_head: None,
            len: 0,
        }
    }

    /// Stores `value` and returns its index and the slot's generation.
    pub(crate) fn insert(&mut self, value: T) -> (usize, u64) {
        self.len += 1;
        match self.free_head {
            Some(index) => {
                let (generation, slot) = &mut self.slots[index];
                let Slot::Vacant(next) = *slot else {
                    panic!("free list points at a full slot {index}")
                };
                self.free_head = next;
                *generation += 1;
                *slot = Slot::Full(value);
                (index, *generation)
            }
            None => {
                self.slots.push((0, Slot::Full(value)));
                (self.slots.len() - 1, 0)
            }
        }
    }

    pub(crate) fn remove(&mut self, index: usize) -> Option<T> {
        let (_, slot) = self.slots.get_mut(index)?;
        if matches!(slot, Slot::Vacant(_)) {
            return None;
        }
        let old = std::mem::replace(slot, Slot::Vacant(self.free_head));
        self.free_head = Some(index);
        self.len -= 1;
        match old {
            Slot::Full(value) => Some(value),
            Slot::Vacant(_) => unreachable!("checked above"),
        }
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        match self.slots.get(index) {
            Some((_, Slot::Full(value))) => Some(value),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        match self.slots.get_mut(index) {
            Some((_, Slot::Full(value))) => Some(value),
            _ => None,
        }
    }

    /// The value at `index` if the slot still holds the fill made at `generation`.
    pub(crate) fn get_mut_generation(&mut self, index: usize, generation: u64) -> Option<&mut T> {
        match self.slots.get_mut(index) {
            Some((g, Slot::Full(value))) if *g == generation => Some(value),
            _ => None,
        }
    }

    pub(crate) fn generation(&self, index: usize) -> Option<u64> {
        match self.slots.get(index) {
            Some((g, Slot::Full(_))) => Some(*g),
            _ => None,
        }
    }

    /// One past the highest index ever used; every live index is below it.
    pub(crate) fn slots_len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_slots_with_new_generations() {
        // Proves removed slots are reused and that a stale (index, generation) handle misses.
        let mut slab = Slab::new();
        let (a, ga) = slab.insert("a");
        let (b, _) = slab.insert("b");
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        let (c, gc) = slab.insert("c");
        assert_eq!(c, a);
        assert_ne!(gc, ga);
        assert!(slab.get_mut_generation(a, ga).is_none());
        assert_eq!(slab.get_mut_generation(c, gc), Some(&mut "c"));
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.slots_len(), 2);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.generation(b), Some(0));
        *slab.get_mut(b).unwrap() = "B";
        assert_eq!(slab.get(b), Some(&"B"));
    }
}
