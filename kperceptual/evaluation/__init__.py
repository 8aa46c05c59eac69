"""Evaluation as the paper reports it: PSNR and SSIM on the luma, LPIPS, and the pinned-region
(blob) and flicker checks (``metrics``); super-resolution benchmarks on image folders, their
tables and comparison grids (``super_resolution``; ``python -m kperceptual.evaluate``).
"""
