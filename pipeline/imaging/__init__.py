"""Image helpers shared by steps: plain functions on bytes and Pillow images."""
