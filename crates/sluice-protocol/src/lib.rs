//! The signaling wire format (protoo envelope + mediasoup-demo methods).
