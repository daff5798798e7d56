import json, struct, sys, torch
def load(f):
    b = open(f, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); d = {}
    dt = {'F32': torch.float32, 'U8': torch.uint8, 'I32': torch.int32, 'I64': torch.int64, 'I16': torch.int16, 'U16': torch.int32}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']
        if v['dtype'] == 'U16':
            t = torch.frombuffer(bytearray(b[8+n+s:8+n+e]), dtype=torch.int16).to(torch.int32) & 0xFFFF
        else:
            t = torch.frombuffer(bytearray(b[8+n+s:8+n+e]), dtype=dt[v['dtype']])
        d[k] = t.reshape(v['shape'])
    return d
e = sys.argv[1]; L = int(sys.argv[2])
hf = load(e + '/hf/model.safetensors'); im = load(e + '/int/model.safetensors')
for W, hfn in [('self_attn.q_proj', 'self_attn.q_proj'), ('self_attn.k_proj', 'self_attn.k_proj'), ('mlp.w1', 'mlp.gate_proj')]:
    w = hf[f'model.layers.{L}.{hfn}.weight'].float()
    p = im[f'model.layers.{L}.{W}.weight_q']
    q = torch.stack([p & 15, p >> 4], -1).reshape(p.shape[0], -1).int()
    mn = w.amin(1, keepdim=True).clamp(max=0) if False else w.amin(1, keepdim=True)
    mx = w.amax(1, keepdim=True)
    s = ((mx - mn) / 15).clamp(1e-5, 1e6)
    z = -torch.round(mn / s)
    c = (torch.round(w / s) + z).clamp(0, 15).int()
    si = im[f'model.layers.{L}.{W}.weight_scale'].reshape(-1, 1)
    zi = im[f'model.layers.{L}.{W}.weight_zero_point'].reshape(-1, 1)
    diff = (c != q)
    print(W, 'scale eq', bool((si == s).all()), 'zp eq', bool((zi == z.int()).all()), 'code mismatches', int(diff.sum()), 'cols', diff.any(0).nonzero().flatten()[:10].tolist())
    # sim's dequant of int codes vs fp32 weight sanity
    print('  max |w|', float(w.abs().max()), 'col absmax top', w.abs().amax(0).topk(3))
