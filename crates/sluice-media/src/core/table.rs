//! [`Table`]: the core's objects of one kind, by worker-local key and by id.
//!
//! One type for every kind (transports, producers, consumers, data producers and consumers,
//! direct transports) instead of a map by key and a map by id kept in step by hand: inserting
//! and removing here updates both.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use crate::types::Key;

/// An object kept in a [`Table`]: it knows its own id.
pub(crate) trait Identified {
    fn id(&self) -> &str;
}

impl<T: Identified + ?Sized> Identified for Box<T> {
    fn id(&self) -> &str {
        (**self).id()
    }
}

/// Objects of one kind by key, with an index by id.
#[derive(Debug)]
pub(crate) struct Table<T> {
    /// Keys are the worker's own counter, so a fast hasher is safe here; ids (some of them
    /// named by clients) keep the standard one.
    by_key: FxHashMap<Key, T>,
    by_id: HashMap<String, Key>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            by_key: FxHashMap::default(),
            by_id: HashMap::new(),
        }
    }
}

impl<T: Identified> Table<T> {
    /// Adds `value` under `key` (and its id).
    pub fn insert(&mut self, key: Key, value: T) {
        self.by_id.insert(value.id().to_owned(), key);
        self.by_key.insert(key, value);
    }

    /// Removes the object of `key` (and its id).
    pub fn remove(&mut self, key: &Key) -> Option<T> {
        let value = self.by_key.remove(key)?;
        self.by_id.remove(value.id());
        self.shrink();
        Some(value)
    }

    /// Gives back memory once most of it is unused (a worker's rooms come and go).
    fn shrink(&mut self) {
        if self.by_key.capacity() > 64 && self.by_key.len() * 4 < self.by_key.capacity() {
            self.by_key.shrink_to(self.by_key.len() * 2);
            self.by_id.shrink_to(self.by_id.len() * 2);
        }
    }
}

impl<T> Table<T> {
    pub fn get(&self, key: &Key) -> Option<&T> {
        self.by_key.get(key)
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut T> {
        self.by_key.get_mut(key)
    }

    pub fn contains_key(&self, key: &Key) -> bool {
        self.by_key.contains_key(key)
    }

    /// The key of the object with this id.
    pub fn key_of(&self, id: &str) -> Option<Key> {
        self.by_id.get(id).copied()
    }

    pub fn contains_id(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The object with this id.
    pub fn by_id(&self, id: &str) -> Option<&T> {
        self.by_key.get(self.by_id.get(id)?)
    }

    pub fn by_id_mut(&mut self, id: &str) -> Option<&mut T> {
        let key = self.key_of(id)?;
        self.by_key.get_mut(&key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.by_key.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.by_key.values()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.by_key.values_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &T)> {
        self.by_key.iter()
    }
}

impl<T> std::ops::Index<&Key> for Table<T> {
    type Output = T;

    /// Panics when `key` is not in the table: callers index only keys they just looked up.
    fn index(&self, key: &Key) -> &T {
        &self.by_key[key]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Obj(&'static str);
    impl Identified for Obj {
        fn id(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn an_object_is_found_by_key_and_by_id_until_removed() {
        let mut t = Table::default();
        t.insert(7, Obj("a"));
        t.insert(9, Obj("b"));
        assert_eq!(t.key_of("a"), Some(7));
        assert_eq!(t.by_id("b").map(|o| o.0), Some("b"));
        assert_eq!(t.remove(&7).map(|o| o.0), Some("a"));
        assert_eq!(t.key_of("a"), None);
        assert!(t.get(&7).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_table_emptied_after_growing_gives_its_memory_back() {
        let ids: Vec<&'static str> = (0..1000)
            .map(|i| &*Box::leak(format!("id{i}").into_boxed_str()))
            .collect();
        let mut t = Table::default();
        for (i, id) in ids.iter().enumerate() {
            t.insert(i as Key, Obj(id));
        }
        let grown = t.by_key.capacity();
        for i in 0..1000 {
            t.remove(&(i as Key));
        }
        assert_eq!(t.len(), 0);
        assert!(
            t.by_key.capacity() < grown / 4,
            "{} of {grown}",
            t.by_key.capacity()
        );
        assert!(t.by_id.capacity() <= t.by_key.capacity().max(128));
    }
}
