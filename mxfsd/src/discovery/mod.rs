//! Discovery of the volume's other members over UDP multicast (being written).
