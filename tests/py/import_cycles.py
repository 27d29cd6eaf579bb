#!/usr/bin/env python3
"""Import cycles between source files.

Builds the file-level import graph of the `idflow` crate (`src/` and `operators/`) and of
`models/src` from every `crate::`, `super::` and `self::` path outside test modules, and prints
each set of files that import each other in a loop (a module and its own parent or children are
not counted: that is Rust's module tree). Exits 1 when there is one. Run from the repository
root: `python3 tests/py/import_cycles.py`.
"""
import re,os,glob,sys
def modpath(f, root, prefix):
    rel=os.path.relpath(f, root)[:-3].split('/')
    if rel[-1] in ('mod','lib'): rel=rel[:-1]
    return prefix+rel
files={}
for f in glob.glob('src/**/*.rs',recursive=True):
    if f.endswith('main.rs'): continue
    files[tuple(modpath(f,'src',['crate']))]=f
for f in glob.glob('operators/**/*.rs',recursive=True):
    files[tuple(modpath(f,'operators',['crate','operators']))]=f
mfiles={}
for f in glob.glob('models/src/**/*.rs',recursive=True):
    mfiles[tuple(modpath(f,'models/src',['crate']))]=f
def analyse(files):
    mods=set(files)
    edges={}
    for m,f in files.items():
        s=open(f).read()
        s=re.sub(r'#\[cfg\(test\)\]\s*mod tests \{.*','',s,flags=re.S)
        s=re.sub(r'//.*','',s)
        deps=set()
        is_modrs=f.endswith('mod.rs') or f.endswith('lib.rs')
        base=list(m) if is_modrs else list(m[:-1])
        for path in re.findall(r'\b((?:crate|super|self)(?:::\w+)+)',s):
            parts=path.split('::')
            if parts[0]=='crate': full=parts
            elif parts[0]=='self': full=list(m)+parts[1:] if is_modrs else list(m)+parts[1:]
            else:
                cur=base[:]
                while parts and parts[0]=='super':
                    cur=cur[:-1]; parts=parts[1:]
                full=cur+parts
            # longest module prefix
            for k in range(len(full),0,-1):
                t=tuple(full[:k])
                if t in mods:
                    if t!=m: deps.add(t)
                    break
        edges[m]=deps
    # cycles via Tarjan SCC, ignoring parent<->child module-declaration edges
    def is_anc(a,b): return len(a)<len(b) and b[:len(a)]==a
    index={};low={};st=[];on=set();res=[];c=[0]
    def sc(v):
        index[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in edges[v]:
            if is_anc(v,w) or is_anc(w,v): continue
            if w not in index: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],index[w])
        if low[v]==index[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: res.append(comp)
    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index: sc(v)
    return res
found=0
for name,fs in (('idflow',files),('models',mfiles)):
    cyc=analyse(fs)
    print(name, 'import cycles:', len(cyc))
    for comp in cyc: print('  ', sorted(fs[x] for x in comp))
    found+=len(cyc)
sys.exit(1 if found else 0)
