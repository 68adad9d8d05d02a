//! Counting the unknown fields that v1 tolerates, by location, while the batch is parsed.
//!
//! A deserializer wrapper in the manner of `serde_ignored`: it forwards everything to the
//! inner deserializer and reports every value a type's `Deserialize` skips as ignored (what a
//! derived struct does with a field it does not know). `serde_ignored` builds a path for each
//! value, with an owned `String` per map key at every level, properties included: ~16
//! allocations per event, a sixth of the parse (docs/BENCHMARKS.md, *Fifth round*). The
//! `unknown_fields_total` metric needs only the location (one of [`UNKNOWN_FIELD_LOCATIONS`]),
//! which the batch's top-level key decides, so this wrapper looks at keys there only and
//! borrows them. Errors and values pass through unchanged: the same body gets the same answer.
//! (One count differs, on purpose: an unknown top-level key with a dot in it, `"events.x"`, is
//! `batch` here, where `serde_ignored`'s dotted path read as `events.…` made it `event`.)
//!
//! [`UNKNOWN_FIELD_LOCATIONS`]: super::UNKNOWN_FIELD_LOCATIONS

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

/// Deserializes a `T` from `de`, calling `on_unknown` with the location of every ignored value.
pub fn deserialize<'de, D, T, F>(de: D, on_unknown: &mut F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: de::Deserialize<'de>,
    F: FnMut(&'static str),
{
    T::deserialize(Tracked {
        de,
        at: At::Top,
        on_unknown,
    })
}

/// Where the value being read sits: the batch object itself, whose keys decide the location,
/// or somewhere below one of its keys.
#[derive(Clone, Copy)]
enum At {
    Top,
    Under(&'static str),
}

impl At {
    /// The `unknown_fields_total` location of a value ignored here.
    fn label(self) -> &'static str {
        match self {
            Self::Top => "batch",
            Self::Under(label) => label,
        }
    }

    /// Where the value of map key `key` sits. Only the batch's own keys name a part.
    fn under_key(self, key: &str) -> Self {
        match self {
            Self::Top => Self::Under(match key {
                "events" => "event",
                "context" => "context",
                "sdk" => "sdk",
                "gaps" => "gap",
                _ => "batch",
            }),
            under => under,
        }
    }

    /// Where an element of a sequence, or a value not under a key, sits.
    fn below(self) -> Self {
        Self::Under(self.label())
    }
}

struct Tracked<'f, D, F> {
    de: D,
    at: At,
    on_unknown: &'f mut F,
}

/// Calls `$forward!` with every `deserialize_*` method of `Deserializer` but
/// `deserialize_ignored_any` (and their arguments before the visitor).
macro_rules! deserialize_methods {
    ($forward:ident) => {
        $forward! {
            deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
            deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
            deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
            deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
            deserialize_string(); deserialize_bytes(); deserialize_byte_buf();
            deserialize_option(); deserialize_unit(); deserialize_unit_struct(name: &'static str);
            deserialize_newtype_struct(name: &'static str); deserialize_seq();
            deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
            deserialize_map();
            deserialize_struct(name: &'static str, fields: &'static [&'static str]);
            deserialize_enum(name: &'static str, variants: &'static [&'static str]);
            deserialize_identifier();
        }
    };
}

/// `deserialize_*` methods that hand the inner deserializer the wrapped visitor.
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let Self { de, at, on_unknown } = self;
            de.$method($($arg,)* TrackedVisitor { visitor, at, on_unknown })
        }
    )*};
}

impl<'de, D, F> Deserializer<'de> for Tracked<'_, D, F>
where
    D: Deserializer<'de>,
    F: FnMut(&'static str),
{
    type Error = D::Error;

    deserialize_methods!(forward_deserialize);

    /// What a type asks for when it skips a value: the one place an unknown field shows.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        (self.on_unknown)(self.at.label());
        self.de.deserialize_ignored_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

struct TrackedVisitor<'f, V, F> {
    visitor: V,
    at: At,
    on_unknown: &'f mut F,
}

/// `visit_*` methods with nothing nested: straight to the inner visitor.
macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.visitor.$method(v)
        }
    )*};
}

impl<'de, V, F> Visitor<'de> for TrackedVisitor<'_, V, F>
where
    V: Visitor<'de>,
    F: FnMut(&'static str),
{
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    forward_visit! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char); visit_str(&str);
        visit_borrowed_str(&'de str); visit_string(String); visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_some(Tracked {
            de,
            at: self.at,
            on_unknown: self.on_unknown,
        })
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_newtype_struct(Tracked {
            de,
            at: self.at,
            on_unknown: self.on_unknown,
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_seq(TrackedSeq {
            seq,
            at: self.at.below(),
            on_unknown: self.on_unknown,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_map(TrackedMap {
            map,
            at: self.at,
            value_at: self.at.below(),
            on_unknown: self.on_unknown,
        })
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_enum(TrackedEnum {
            data,
            at: self.at.below(),
            on_unknown: self.on_unknown,
        })
    }
}

/// A value's seed, its deserializer wrapped.
struct TrackedSeed<'f, S, F> {
    seed: S,
    at: At,
    on_unknown: &'f mut F,
}

impl<'de, S, F> DeserializeSeed<'de> for TrackedSeed<'_, S, F>
where
    S: DeserializeSeed<'de>,
    F: FnMut(&'static str),
{
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.seed.deserialize(Tracked {
            de,
            at: self.at,
            on_unknown: self.on_unknown,
        })
    }
}

struct TrackedSeq<'f, A, F> {
    seq: A,
    at: At,
    on_unknown: &'f mut F,
}

impl<'de, A, F> SeqAccess<'de> for TrackedSeq<'_, A, F>
where
    A: SeqAccess<'de>,
    F: FnMut(&'static str),
{
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.seq.next_element_seed(TrackedSeed {
            seed,
            at: self.at,
            on_unknown: self.on_unknown,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

struct TrackedMap<'f, A, F> {
    map: A,
    at: At,
    /// Where the value of the key read last sits.
    value_at: At,
    on_unknown: &'f mut F,
}

impl<'de, A, F> MapAccess<'de> for TrackedMap<'_, A, F>
where
    A: MapAccess<'de>,
    F: FnMut(&'static str),
{
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match self.at {
            // Keys are not wrapped (nothing in a key is a field); only the batch's are read.
            At::Under(_) => self.map.next_key_seed(seed),
            At::Top => {
                self.value_at = self.at.below();
                self.map.next_key_seed(KeySeed {
                    seed,
                    value_at: &mut self.value_at,
                })
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(TrackedSeed {
            seed,
            at: self.value_at,
            on_unknown: self.on_unknown,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A key of the batch object: where its value sits is read from it on the way through.
struct KeySeed<'k, K> {
    seed: K,
    value_at: &'k mut At,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.seed.deserialize(KeyDeserializer {
            de,
            value_at: self.value_at,
        })
    }
}

struct KeyDeserializer<'k, D> {
    de: D,
    value_at: &'k mut At,
}

/// `deserialize_*` methods of a key: the inner visitor wrapped to read the key's text.
macro_rules! forward_key {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.de.$method($($arg,)* KeyVisitor { visitor, value_at: self.value_at })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDeserializer<'_, D> {
    type Error = D::Error;

    deserialize_methods!(forward_key);
    forward_key! { deserialize_ignored_any(); }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

struct KeyVisitor<'k, V> {
    visitor: V,
    value_at: &'k mut At,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        *self.value_at = At::Top.under_key(v);
        self.visitor.visit_str(v)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        *self.value_at = At::Top.under_key(v);
        self.visitor.visit_borrowed_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        *self.value_at = At::Top.under_key(&v);
        self.visitor.visit_string(v)
    }

    forward_visit! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
        visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_none()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_some(de)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_newtype_struct(de)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_map(map)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_enum(data)
    }
}

struct TrackedEnum<'f, A, F> {
    data: A,
    at: At,
    on_unknown: &'f mut F,
}

impl<'de, 'f, A, F> EnumAccess<'de> for TrackedEnum<'f, A, F>
where
    A: EnumAccess<'de>,
    F: FnMut(&'static str),
{
    type Error = A::Error;
    type Variant = TrackedVariant<'f, A::Variant, F>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let (value, variant) = self.data.variant_seed(seed)?;
        Ok((
            value,
            TrackedVariant {
                variant,
                at: self.at,
                on_unknown: self.on_unknown,
            },
        ))
    }
}

struct TrackedVariant<'f, A, F> {
    variant: A,
    at: At,
    on_unknown: &'f mut F,
}

impl<'de, A, F> de::VariantAccess<'de> for TrackedVariant<'_, A, F>
where
    A: de::VariantAccess<'de>,
    F: FnMut(&'static str),
{
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.variant.unit_variant()
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.variant.newtype_variant_seed(TrackedSeed {
            seed,
            at: self.at,
            on_unknown: self.on_unknown,
        })
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.variant.tuple_variant(
            len,
            TrackedVisitor {
                visitor,
                at: self.at,
                on_unknown: self.on_unknown,
            },
        )
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.variant.struct_variant(
            fields,
            TrackedVisitor {
                visitor,
                at: self.at,
                on_unknown: self.on_unknown,
            },
        )
    }
}
