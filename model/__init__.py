"""The landmark network, its losses and the NME metric."""
