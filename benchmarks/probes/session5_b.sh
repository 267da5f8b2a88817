# device run (session 5): Wan2.1-14B at 768 x 1280 (21 x 48 x 80 tokens, the neighbourhood preset's (1, 8, 16) tiles divide it):
# dense vs the neighbourhood preset in a tile-order forward vs the same patch with tile_order=False
python benchmarks/transformer.py --out $OUT --reps 2 --height 768 --width 1280 --method neighborhood > $OUT/transformer_h100_neighborhood.log 2>&1
tail -25 $OUT/transformer_h100_neighborhood.log
