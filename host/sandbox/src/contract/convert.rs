//! Conversions between a contract version's generated types and medic's
//! own ([`medic_backends`]' values, [`crate::event`], [`crate::info`]).
//! Generated types are distinct per version even where they look alike, so
//! each version's module declares its pairs with [`convert_enum!`] and
//! [`convert_record!`], which write both directions.

/// Turn a value of one side's type into the other side's.
pub trait Convert<T> {
    fn convert(self) -> T;
}

macro_rules! same_on_both_sides {
    ($($t:ty),*) => {
        $(impl Convert<$t> for $t {
            fn convert(self) -> $t {
                self
            }
        })*
    };
}

same_on_both_sides!((), String, bool, u8, u16, u32, u64, (String, String));

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

/// Both directions between two enums with the same cases.
macro_rules! convert_enum {
    ($a:ty, $b:ty { $($case:ident),+ $(,)? }) => {
        impl $crate::contract::convert::Convert<$b> for $a {
            fn convert(self) -> $b {
                type Target = $b;
                match self { $(Self::$case => Target::$case),+ }
            }
        }
        impl $crate::contract::convert::Convert<$a> for $b {
            fn convert(self) -> $a {
                type Target = $a;
                match self { $(Self::$case => Target::$case),+ }
            }
        }
    };
}

/// Both directions between two records with the same fields.
macro_rules! convert_record {
    ($a:ty, $b:ty { $($field:ident),+ $(,)? }) => {
        impl $crate::contract::convert::Convert<$b> for $a {
            fn convert(self) -> $b {
                type Target = $b;
                Target { $($field: $crate::contract::convert::Convert::convert(self.$field)),+ }
            }
        }
        impl $crate::contract::convert::Convert<$a> for $b {
            fn convert(self) -> $a {
                type Target = $a;
                Target { $($field: $crate::contract::convert::Convert::convert(self.$field)),+ }
            }
        }
    };
}

pub(crate) use {convert_enum, convert_record};

/// A host call's result as the plugin sees it: the value and the error
/// converted to the version's types.
pub fn result<T: Convert<U>, U, E>(result: Result<T, medic_backends::BackendError>) -> Result<U, E>
where
    medic_backends::BackendError: Convert<E>,
{
    result.map(Convert::convert).map_err(Convert::convert)
}
