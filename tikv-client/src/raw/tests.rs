//! RawClient tests against tikv-mock.
